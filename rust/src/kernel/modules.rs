//! Loaded modules, read with BTF layouts and no debug info (SPEC §14, `Kvm.modules`).
//!
//! Every module is on the kernel's `modules` list through `module.list`. Where its core
//! memory lies depends on the kernel, and BTF says which it has:
//! - 6.4 and later: `mem[MOD_TEXT..]`, one `struct module_memory { base; size; }` per
//!   `enum mod_mem_type`; the core is every type but the `MOD_INIT_*` ones.
//! - 4.5 to 6.3: `core_layout` (`struct module_layout { base; size; text_size; ... }`).
//! - before 4.5: `module_core`, `core_size`, `core_text_size` in `struct module` itself.
//!
//! The walk is bounded: at most `MAX_MODULES` links, a node seen twice is a loop, and a
//! link that cannot be read ends it; the list then says it is incomplete and why.
//!
//! This is the one reader of the list: `Kvm.modules()` reports what it finds, and
//! backtraces read each walked module's own symbols and ORC from it
//! (`module_symbols::read`, with the `kallsyms` and `orc` offsets of the same layout).

use super::list::Rings;

use super::{describe, member_offset, ReadFn, Words};
use crate::btf::Btf;
use crate::cancel::Cancel;
use crate::errors::Error;

/// More modules than any kernel loads (a module id is no bound; memory is).
pub const MAX_MODULES: usize = 1 << 16;
/// `MODULE_NAME_LEN` is 64 - sizeof(unsigned long): the name's size where BTF does not say.
const NAME_AND_LONG: u64 = 64;
/// The most of one `struct module` read at once (real ones are 1-2 KiB).
const MAX_MODULE_BYTES: u64 = 1 << 16;

/// Where a module's core memory is described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Core {
    /// `mem[]` (6.4+): the offset of each core `module_memory`'s base and size; the text's
    /// first.
    Memory {
        text: (u64, u64),
        others: Vec<(u64, u64)>,
    },
    /// `core_layout` (4.5-6.3), or the fields of `struct module` before it.
    Layout {
        base: u64,
        size: u64,
        text_size: u64,
    },
}

/// Where the fields `Module` needs lie, from BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLayout {
    pub list: u64,
    pub list_next: u64,
    pub name: u64,
    pub name_len: u64,
    /// `state`, and the names of its values (`enum module_state`).
    pub state: Option<(u64, Vec<(i64, String)>)>,
    pub core: Core,
    /// Bytes of `struct module` read per module (covers every field above).
    pub span: u64,
    /// Which layout this kernel has: `mem[MOD_TEXT]`, `core_layout` or `module_core`.
    pub kind: &'static str,
    /// `kallsyms`, and in `struct mod_kallsyms`: `symtab`, `num_symtab`, `strtab` (read
    /// only for backtraces, outside `span`).
    pub kallsyms: Option<(u64, u64, u64, u64)>,
    /// `arch.orc_unwind_ip`, `arch.orc_unwind`, `arch.num_orcs` (x86_64 with ORC; read
    /// only for backtraces, outside `span`).
    pub orc: Option<(u64, u64, u64)>,
}

impl ModuleLayout {
    /// The layout, or the first thing BTF lacks (`"module.list"`).
    pub fn from_btf(btf: &Btf, words: Words) -> Result<ModuleLayout, String> {
        let module = btf
            .find_struct("module")
            .ok_or_else(|| "struct module".to_owned())?;
        let list_head = btf
            .find_struct("list_head")
            .ok_or_else(|| "struct list_head".to_owned())?;
        let offset = |of: u32, path: &str, owner: &str| member_offset(btf, of, path, owner);
        let name = btf
            .member(module, "name")
            .ok_or_else(|| "module.name".to_owned())?;
        let name_len = btf
            .size_of(name.type_id, words.long_bytes())
            .filter(|&n| n > 0 && n <= 256)
            .unwrap_or_else(|| NAME_AND_LONG.saturating_sub(words.long_bytes()));
        let state = btf.member(module, "state").map(|m| {
            let names = btf
                .enumerators(m.type_id)
                .into_iter()
                .filter_map(|(off, value)| {
                    Some((
                        value,
                        String::from_utf8_lossy(btf.string(off)?).into_owned(),
                    ))
                })
                .collect();
            (m.byte_offset(), names)
        });
        let (core, kind) = if let Some((mem, member)) = btf.offset_of(module, "mem") {
            (
                memory_core(btf, words, mem, member.type_id)?,
                "mem[MOD_TEXT]",
            )
        } else if btf.member(module, "core_layout").is_some() {
            let at = |path: &str| offset(module, &format!("core_layout.{path}"), "module");
            (
                Core::Layout {
                    base: at("base")?,
                    size: at("size")?,
                    text_size: at("text_size")?,
                },
                "core_layout",
            )
        } else {
            (
                Core::Layout {
                    base: offset(module, "module_core", "module")?,
                    size: offset(module, "core_size", "module")?,
                    text_size: offset(module, "core_text_size", "module")?,
                },
                "module_core",
            )
        };
        let name_at = name.byte_offset();
        let mut ends = vec![name_at.saturating_add(name_len)];
        if let Some((at, _)) = &state {
            ends.push(at.saturating_add(4));
        }
        let long = words.long_bytes();
        match &core {
            Core::Memory { text, others } => {
                for (base, size) in std::iter::once(text).chain(others) {
                    ends.push(base.saturating_add(long));
                    ends.push(size.saturating_add(4));
                }
            }
            Core::Layout {
                base,
                size,
                text_size,
            } => {
                ends.extend([
                    base.saturating_add(long),
                    size.saturating_add(4),
                    text_size.saturating_add(4),
                ]);
            }
        }
        let list = offset(module, "list", "module")?;
        ends.push(list.saturating_add(long));
        let span = ends.into_iter().max().unwrap_or(0);
        if span > MAX_MODULE_BYTES {
            return Err(format!("struct module of {span} bytes"));
        }
        Ok(ModuleLayout {
            list,
            list_next: offset(list_head, "next", "list_head")?,
            name: name_at,
            name_len,
            state,
            core,
            span,
            kind,
            kallsyms: kallsyms_layout(btf, module),
            orc: orc_layout(btf, module),
        })
    }
}

/// `module.kallsyms` and the `struct mod_kallsyms` members a module's symbols are read
/// from; None where BTF lacks any of them.
fn kallsyms_layout(btf: &Btf, module: u32) -> Option<(u64, u64, u64, u64)> {
    let kallsyms = btf.find_struct("mod_kallsyms")?;
    let of = |owner: u32, path: &str| btf.offset_of(owner, path).map(|(offset, _)| offset);
    Some((
        of(module, "kallsyms")?,
        of(kallsyms, "symtab")?,
        of(kallsyms, "num_symtab")?,
        of(kallsyms, "strtab")?,
    ))
}

/// `module.arch`'s ORC table members; None where BTF lacks any of them.
fn orc_layout(btf: &Btf, module: u32) -> Option<(u64, u64, u64)> {
    let of = |path: &str| btf.offset_of(module, path).map(|(offset, _)| offset);
    Some((
        of("arch.orc_unwind_ip")?,
        of("arch.orc_unwind")?,
        of("arch.num_orcs")?,
    ))
}

/// `mem[]`'s core entries: every `mod_mem_type` below `MOD_MEM_NUM_TYPES` that is not a
/// `MOD_INIT_*` one, `MOD_TEXT` first.
fn memory_core(btf: &Btf, words: Words, mem: u64, array_type: u32) -> Result<Core, String> {
    let array = btf
        .array(array_type)
        .ok_or_else(|| "module.mem (not an array)".to_owned())?;
    let memory = btf
        .resolve(array.elem_type)
        .filter(|&id| id != 0)
        .ok_or_else(|| "struct module_memory".to_owned())?;
    let stride = btf
        .size_of(memory, words.long_bytes())
        .filter(|&n| n > 0)
        .ok_or_else(|| "struct module_memory (no size)".to_owned())?;
    let base = member_offset(btf, memory, "base", "module_memory")?;
    let size = member_offset(btf, memory, "size", "module_memory")?;
    let at = |index: i64| -> Option<(u64, u64)> {
        let index = u64::try_from(index).ok()?;
        if index >= u64::from(array.count) {
            return None;
        }
        let start = mem.checked_add(index.checked_mul(stride)?)?;
        Some((start.checked_add(base)?, start.checked_add(size)?))
    };
    let text_index = btf.enumerator("MOD_TEXT").unwrap_or(0);
    let text = at(text_index).ok_or_else(|| "module.mem[MOD_TEXT]".to_owned())?;
    let mut others = Vec::new();
    for name in ["MOD_DATA", "MOD_RODATA", "MOD_RO_AFTER_INIT"] {
        if let Some(entry) = btf.enumerator(name).and_then(at) {
            others.push(entry);
        }
    }
    Ok(Core::Memory { text, others })
}

/// One loaded module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: Vec<u8>,
    /// Where its core text starts.
    pub base: u64,
    /// Its core memory in bytes: text, data, read-only data and read-only-after-init.
    pub size: u64,
    pub text_size: u64,
    /// The `enum module_state` name (`MODULE_STATE_LIVE`), or the number where BTF has
    /// no name for it.
    pub state: Option<String>,
    /// The address of its `struct module`.
    pub module: u64,
}

/// What a walk of the list found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleList {
    /// In list order (the most recently loaded first, as `lsmod` shows them).
    pub modules: Vec<Module>,
    /// True when the walk came back to its head.
    pub complete: bool,
    /// Why not (empty when complete).
    pub problems: Vec<String>,
}

/// Walks `modules` (the list head's address) with `layout`.
pub fn walk(
    read: ReadFn<'_>,
    words: Words,
    layout: &ModuleLayout,
    head: u64,
    cancel: &Cancel,
) -> Result<ModuleList, Error> {
    // Each module one link, and the link back to the head.
    let steps = MAX_MODULES.saturating_add(2);
    let mut rings = Rings::new(read, words, cancel, "module", MAX_MODULES, steps);
    let complete = rings.ring(head, layout.list, layout.list_next, None, "the module list")?;
    let mut modules = Vec::with_capacity(rings.order.len());
    for module in std::mem::take(&mut rings.order) {
        cancel.check()?;
        match read_module(read, words, layout, module) {
            Ok(found) => modules.push(found),
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(error) => rings.problem(format!(
                "module {module:#x} is not readable ({})",
                describe(&error)
            )),
        }
    }
    Ok(ModuleList {
        modules,
        complete: complete && rings.problems.is_empty(),
        problems: rings.problems,
    })
}

fn read_module(
    read: ReadFn<'_>,
    words: Words,
    layout: &ModuleLayout,
    module: u64,
) -> Result<Module, Error> {
    let raw = read(module, usize::try_from(layout.span).unwrap_or(0))?;
    let slice = |at: u64, len: u64| {
        let start = usize::try_from(at).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        raw.get(start..end)
    };
    let name_raw = slice(layout.name, layout.name_len).unwrap_or(&[]);
    let name_end = memchr::memchr(0, name_raw).unwrap_or(name_raw.len());
    let name = name_raw.get(..name_end).unwrap_or(&[]).to_vec();
    let state = layout.state.as_ref().map(|(at, names)| {
        let value = i64::from(i32::from_ne_bytes(words.u32(&raw, *at).to_ne_bytes()));
        names
            .iter()
            .find(|(v, _)| *v == value)
            .map_or_else(|| value.to_string(), |(_, name)| name.clone())
    });
    let (base, size, text_size) = match &layout.core {
        Core::Memory { text, others } => {
            let text_size = u64::from(words.u32(&raw, text.1));
            let size = others.iter().fold(text_size, |total, (_, size)| {
                total.saturating_add(u64::from(words.u32(&raw, *size)))
            });
            (words.long(&raw, text.0), size, text_size)
        }
        Core::Layout {
            base,
            size,
            text_size,
        } => (
            words.long(&raw, *base),
            u64::from(words.u32(&raw, *size)),
            u64::from(words.u32(&raw, *text_size)),
        ),
    };
    Ok(Module {
        name,
        base,
        size,
        text_size,
        state,
        module,
    })
}

#[cfg(test)]
pub(crate) mod tests;
