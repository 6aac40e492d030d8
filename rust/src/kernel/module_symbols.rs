//! What a backtrace through a module needs beyond the walked list (SPEC §14: "module
//! symbols from each module's own kallsyms in `struct module`"): each module's core text,
//! its own text symbols and (x86_64) its ORC table.
//!
//! The modules come from the one walk of the `modules` list (`modules::walk`), and the
//! offsets from the same `ModuleLayout`. The symbols are `kallsyms->symtab` (`num_symtab`
//! `Elf64_Sym`s) with names in `kallsyms->strtab`; a module's ORC is `arch.orc_unwind_ip`,
//! `arch.orc_unwind`, `arch.num_orcs`. Every count is bounded, every name too.

use super::modules::{Module, ModuleLayout};
use super::{ReadFn, Words};
use crate::translate::unwind::ModuleText;

/// More symbols than one module has (the biggest have some 60,000).
pub const MAX_SYMBOLS: u64 = 1 << 18;
/// `KSYM_NAME_LEN` (512 since 6.1): longer names are cut there.
const MAX_NAME: usize = 512;
/// `sizeof(Elf64_Sym)`.
const SYM_SIZE: u64 = 24;
/// How a string is read: in pieces that never cross a 4 KiB boundary, the smallest page
/// size of any machine, so a string ending before a page the dump lacks still reads.
const PAGE: u64 = 4096;

/// One loaded module as a backtrace sees it: its text, its text symbols (runtime value,
/// name; sorted by value) and its unwinding tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSymbols {
    pub text: ModuleText,
    pub symbols: Vec<(u64, String)>,
}

impl ModuleSymbols {
    /// The module's symbol at or below `addr`: its name and value.
    pub fn nearest(&self, addr: u64) -> Option<(&str, u64)> {
        let index = self.symbols.partition_point(|(value, _)| *value <= addr);
        let (value, name) = self.symbols.get(index.checked_sub(1)?)?;
        Some((name.as_str(), *value))
    }
}

/// The text, symbols and ORC of each walked module, in list order. A module whose symbols
/// or ORC cannot be read is kept without them.
pub fn read(
    read: ReadFn<'_>,
    words: Words,
    layout: &ModuleLayout,
    modules: &[Module],
) -> Vec<ModuleSymbols> {
    modules
        .iter()
        .map(|module| read_module(read, words, layout, module))
        .collect()
}

/// A NUL-terminated string of at most `max` bytes at `addr`, read a page at a time (a name
/// may end just before a page the dump lacks).
fn c_string(read: ReadFn<'_>, addr: u64, max: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let to_page = PAGE.saturating_sub(at % PAGE);
        let want = usize::try_from(to_page)
            .unwrap_or(max)
            .min(max.saturating_sub(out.len()));
        let chunk = read(at, want).ok()?;
        if let Some(end) = memchr::memchr(0, &chunk) {
            out.extend_from_slice(chunk.get(..end)?);
            return Some(out);
        }
        out.extend_from_slice(&chunk);
        at = at.checked_add(u64::try_from(want).ok()?)?;
    }
    Some(out)
}

/// One walked module's text, ORC and symbols.
fn read_module(
    read: ReadFn<'_>,
    words: Words,
    layout: &ModuleLayout,
    module: &Module,
) -> ModuleSymbols {
    let long = |at: u64| words.read_long(read, at).ok();
    let at = module.module;
    let orc = layout.orc.and_then(|(ip, orc, num)| {
        let count = u64::from(words.read_u32(read, at.checked_add(num)?).ok()?);
        let ip = long(at.checked_add(ip)?)?;
        let orc = long(at.checked_add(orc)?)?;
        (count > 0 && ip != 0 && orc != 0).then_some((ip, orc, count))
    });
    let text = ModuleText {
        name: String::from_utf8_lossy(&module.name).into_owned(),
        base: module.base,
        size: module.text_size,
        orc,
    };
    let symbols = layout
        .kallsyms
        .and_then(|k| symbols(read, words, k, at, &text))
        .unwrap_or_default();
    ModuleSymbols { text, symbols }
}

/// The module's symbols that lie in its core text, sorted by value.
fn symbols(
    read: ReadFn<'_>,
    words: Words,
    (kallsyms, symtab, num_symtab, strtab): (u64, u64, u64, u64),
    module: u64,
    text: &ModuleText,
) -> Option<Vec<(u64, String)>> {
    let long = |at: u64| words.read_long(read, at).ok();
    let kallsyms = long(module.checked_add(kallsyms)?)?;
    let symtab = long(kallsyms.checked_add(symtab)?)?;
    let count = long(kallsyms.checked_add(num_symtab)?)?;
    let strtab = long(kallsyms.checked_add(strtab)?)?;
    if count > MAX_SYMBOLS {
        return None;
    }
    let raw = read(symtab, usize::try_from(count.checked_mul(SYM_SIZE)?).ok()?).ok()?;
    let mut found = Vec::new();
    for sym in raw.chunks_exact(usize::try_from(SYM_SIZE).ok()?) {
        let st_name = words.u32(sym, 0);
        let value = words.u64(sym, 8);
        if st_name == 0 || !text.contains(value) {
            continue;
        }
        let Some(name) = c_string(read, strtab.checked_add(u64::from(st_name))?, MAX_NAME) else {
            continue;
        };
        if !name.is_empty() {
            found.push((value, String::from_utf8_lossy(&name).into_owned()));
        }
    }
    found.sort();
    found.dedup_by_key(|(value, _)| *value);
    Some(found)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::cancel::NEVER;
    use crate::kernel::modules::tests::Memory;
    use crate::kernel::modules::{self, Core};

    const WORDS: Words = Words {
        big_endian: false,
        wide: true,
    };

    fn layout() -> ModuleLayout {
        ModuleLayout {
            list: 8,
            list_next: 0,
            name: 24,
            name_len: 56,
            state: None,
            core: Core::Layout {
                base: 0x100,
                size: 0x10c,
                text_size: 0x108,
            },
            span: 0x110,
            kind: "test",
            kallsyms: Some((0x110, 0, 8, 16)),
            orc: Some((0x120, 0x128, 0x130)),
        }
    }

    /// The walk, then each module's symbols: what a backtrace reads.
    fn walk(
        read: ReadFn<'_>,
        words: Words,
        layout: &ModuleLayout,
        head: u64,
    ) -> Vec<ModuleSymbols> {
        let list = modules::walk(read, words, layout, head, &NEVER).unwrap();
        super::read(read, words, layout, &list.modules)
    }

    fn sym(name: u32, value: u64) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&name.to_le_bytes());
        raw.extend_from_slice(&[0x12, 0, 1, 0]);
        raw.extend_from_slice(&value.to_le_bytes());
        raw.extend_from_slice(&16u64.to_le_bytes());
        raw
    }

    /// One module "demo" with text at 0xc000_0000 (0x1000 bytes), three text symbols and
    /// a data symbol, and an ORC table.
    fn memory(num_symtab: u64) -> Memory {
        let mut m = Memory::default();
        let head = 0x1000u64;
        let module = 0x2000u64;
        m.put(head, &(module + 8).to_le_bytes());
        m.put(module + 8, &head.to_le_bytes());
        m.put(module + 24, b"demo\0");
        m.put(module + 0x100, &0xc000_0000u64.to_le_bytes());
        m.put(module + 0x108, &0x1000u32.to_le_bytes());
        m.put(module + 0x110, &0x3000u64.to_le_bytes());
        m.put(module + 0x120, &0x5000u64.to_le_bytes());
        m.put(module + 0x128, &0x6000u64.to_le_bytes());
        m.put(module + 0x130, &3u32.to_le_bytes());
        m.put(0x3000, &0x4000u64.to_le_bytes());
        m.put(0x3008, &num_symtab.to_le_bytes());
        m.put(0x3010, &0x4800u64.to_le_bytes());
        let mut table = sym(0, 0);
        table.extend(sym(1, 0xc000_0200));
        table.extend(sym(7, 0xc000_0000));
        table.extend(sym(13, 0xd000_0000)); // data, outside the text
        table.extend(sym(18, 0xc000_0800));
        m.put(0x4000, &table);
        m.put(0x4800, b"\0probe\0start\0data\0remove\0");
        m
    }

    #[test]
    fn a_module_with_its_symbols_and_orc() {
        let m = memory(5);
        let read = |a: u64, n: usize| m.read(a, n);
        let found = walk(&read, WORDS, &layout(), 0x1000);
        assert_eq!(found.len(), 1);
        let demo = &found[0];
        assert_eq!(
            demo.text,
            ModuleText {
                name: "demo".into(),
                base: 0xc000_0000,
                size: 0x1000,
                orc: Some((0x5000, 0x6000, 3)),
            }
        );
        assert_eq!(
            demo.symbols,
            vec![
                (0xc000_0000, "start".into()),
                (0xc000_0200, "probe".into()),
                (0xc000_0800, "remove".into()),
            ]
        );
        assert_eq!(demo.nearest(0xc000_0210), Some(("probe", 0xc000_0200)));
        assert_eq!(demo.nearest(0xbfff_ffff), None);
    }

    #[test]
    fn hostile_counts_and_loops_are_bounded() {
        // num_symtab past the limit: the module without symbols.
        let m = memory(MAX_SYMBOLS + 1);
        let read = |a: u64, n: usize| m.read(a, n);
        let found = walk(&read, WORDS, &layout(), 0x1000);
        assert_eq!(found.len(), 1);
        assert!(found[0].symbols.is_empty());
        // A ring that never comes back to its head: each module once.
        let mut m = memory(5);
        m.put(0x2008, &0x2008u64.to_le_bytes());
        let read = |a: u64, n: usize| m.read(a, n);
        assert_eq!(walk(&read, WORDS, &layout(), 0x1000).len(), 1);
        // An unreadable head: nothing.
        assert!(walk(&read, WORDS, &layout(), 0x9_0000).is_empty());
    }

    #[test]
    fn names_are_cut_at_the_limit_and_a_missing_page() {
        let mut m = Memory::default();
        m.put(PAGE - 3, b"abc"); // the next page is not there
        let read = |a: u64, n: usize| m.read(a, n);
        assert_eq!(c_string(&read, PAGE - 3, 10), None);
        m.put(PAGE, b"d\0");
        let read = |a: u64, n: usize| m.read(a, n);
        assert_eq!(c_string(&read, PAGE - 3, 10), Some(b"abcd".to_vec()));
        assert_eq!(c_string(&read, PAGE - 3, 2), Some(b"ab".to_vec()));
    }
}
