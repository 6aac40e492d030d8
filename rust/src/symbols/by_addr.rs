//! Address → symbol: the exec file's text symbols sorted by value, built once on the first
//! backtrace. A lookup gives the nearest text symbol at or below the address, as the kernel's
//! own `kallsyms_lookup` does: of several symbols at one address, the first in the order
//! `scripts/kallsyms.c` sorts them (strong before weak, linker-script symbols such as
//! `__sched_text_start` last, fewer leading underscores first, then table order).

use super::ExecFile;

/// `nm` letters of code: text, weak text.
fn is_text(letter: u8) -> bool {
    matches!(letter, b'T' | b't' | b'W' | b'w')
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    value: u64,
    name_at: usize,
    name_len: u32,
    weak: bool,
}

/// `may_be_linker_script_provided_symbol` of `scripts/kallsyms.c`: `__start_*`,
/// `__stop_*`, `__end_*`, `__*_start`, `__*_end`.
fn linker_script(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(b"__") else {
        return false;
    };
    name.len() >= 8
        && (rest.starts_with(b"start_")
            || rest.starts_with(b"stop_")
            || rest.starts_with(b"end_")
            || rest.ends_with(b"_start")
            || rest.ends_with(b"_end"))
}

/// How `scripts/kallsyms.c` orders symbols of one address: the least key names it.
fn alias_rank(name: &[u8], weak: bool) -> (bool, bool, usize) {
    let underscores = name.iter().take_while(|&&b| b == b'_').count();
    (weak, linker_script(name), underscores)
}

pub struct AddrIndex {
    /// Sorted by value; symbols of one value keep the table's order.
    entries: Vec<Entry>,
}

/// A symbol found for an address: its name (bytes of the exec file) and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nearest<'a> {
    pub name: &'a [u8],
    pub value: u64,
}

impl AddrIndex {
    pub fn build(exec: &ExecFile) -> AddrIndex {
        let mut entries = Vec::new();
        exec.for_each(|name, name_at, symbol| {
            if !is_text(symbol.letter) || name.is_empty() {
                return;
            }
            if let Ok(name_len) = u32::try_from(name.len()) {
                entries.push(Entry {
                    value: symbol.value,
                    name_at,
                    name_len,
                    weak: matches!(symbol.letter, b'W' | b'w'),
                });
            }
        });
        // Stable: aliases keep the order the table gives them.
        entries.sort_by_key(|e| e.value);
        AddrIndex { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The nearest text symbol at or below `addr` (values as the table holds them).
    pub fn nearest<'a>(&self, data: &'a [u8], addr: u64) -> Option<Nearest<'a>> {
        let above = self.entries.partition_point(|e| e.value <= addr);
        let value = self.entries.get(above.checked_sub(1)?)?.value;
        let first = self.entries.partition_point(|e| e.value < value);
        let name = |e: &Entry| {
            let end = e.name_at.checked_add(e.name_len as usize)?;
            data.get(e.name_at..end)
        };
        // `min_by_key` keeps the first of equal keys: table order breaks ties.
        let name = self
            .entries
            .get(first..above)?
            .iter()
            .filter_map(|e| Some((name(e)?, e.weak)))
            .min_by_key(|(name, weak)| alias_rank(name, *weak))?
            .0;
        Some(Nearest { name, value })
    }
}

#[cfg(test)]
mod tests {
    use super::super::system_map as exec;

    #[test]
    fn nearest_preceding_text_symbol() {
        let exec = exec(
            "ffffffff81000000 T _stext\nffffffff81000010 t alias_b\nffffffff81000010 T alias_a\n\
             ffffffff81000020 D data_in_text\nffffffff81000100 T last\nffffffff80ffffff A abs\n",
        );
        let index = exec.by_address();
        let name = |addr: u64| {
            index
                .nearest(exec.data(), addr)
                .map(|n| (String::from_utf8_lossy(n.name).into_owned(), n.value))
        };
        assert_eq!(index.len(), 4);
        assert_eq!(name(0xffff_ffff_80ff_ffff), None);
        assert_eq!(
            name(0xffff_ffff_8100_0000),
            Some(("_stext".into(), 0xffff_ffff_8100_0000))
        );
        // Two symbols at one address: the first in table order; data symbols never name code.
        assert_eq!(
            name(0xffff_ffff_8100_0030),
            Some(("alias_b".into(), 0xffff_ffff_8100_0010))
        );
        assert_eq!(name(u64::MAX).map(|n| n.0), Some("last".into()));
    }

    #[test]
    fn aliases_in_the_order_kallsyms_sorts_them() {
        // arm64: .sched.text starts with __switch_to.
        let exec = exec(
            "ffff800008cdfee0 T __sched_text_start\nffff800008cdfee0 T __switch_to\n\
             ffff800008ce0000 W weak_one\nffff800008ce0000 T __strong\n\
             ffff800008ce0100 T ___three\nffff800008ce0100 T _one\n\
             ffff800008ce0200 T __start_x\nffff800008ce0200 T __stop_x\n",
        );
        let index = exec.by_address();
        let name = |addr: u64| {
            index
                .nearest(exec.data(), addr)
                .map(|n| String::from_utf8_lossy(n.name).into_owned())
        };
        assert_eq!(name(0xffff_8000_08cd_fee8).as_deref(), Some("__switch_to"));
        assert_eq!(name(0xffff_8000_08ce_0000).as_deref(), Some("__strong"));
        assert_eq!(name(0xffff_8000_08ce_0100).as_deref(), Some("_one"));
        assert_eq!(name(0xffff_8000_08ce_0200).as_deref(), Some("__start_x"));
    }

    #[test]
    fn empty_and_hostile_tables_answer_none() {
        let exec = exec("ffffffff81000000 D only_data\n");
        assert!(exec.by_address().is_empty());
        assert_eq!(exec.by_address().nearest(exec.data(), u64::MAX), None);
        assert_eq!(exec.by_address().nearest(exec.data(), 0), None);
    }
}
