//! ELF kernel images: `.symtab` and its string table, the build-id note, `e_machine`.
//!
//! goblin parses the ELF and section headers and iterates the symbol table lazily; the full
//! `Elf::parse` is avoided because it also parses every relocation section, and vmlinux
//! carries millions of relocations (`--emit-relocs`). goblin has panicked on malformed input
//! before, so every call into it runs under `catch_unwind`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use goblin::container::Ctx;
use goblin::elf::section_header::{
    SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHT_NOBITS, SHT_NOTE, SHT_SYMTAB,
};
use goblin::elf::sym::{
    Symtab, STB_GLOBAL, STB_LOCAL, STB_WEAK, STT_FILE, STT_OBJECT, STT_SECTION,
};
use goblin::elf::{Elf, SectionHeader};

use super::{ElfFacts, Symbol};
use crate::errors::SymbolFault;
use crate::formats::notes::Notes;
use crate::formats::Fields;
use crate::translate;

/// The longest symbol name taken from `.strtab` (kallsyms keeps at most 512 bytes).
const MAX_NAME: usize = 4096;

const SHN_UNDEF: usize = 0;
const SHN_ABS: usize = 0xfff1;
const SHN_COMMON: usize = 0xfff2;
const NT_GNU_BUILD_ID: u32 = 3;

struct Section {
    sh_type: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
}

/// Where the symbol table lies in the file, and the section facts that give symbols
/// their `nm` letters.
pub struct ElfSymtab {
    ctx: Ctx,
    symtab_offset: usize,
    symtab_count: usize,
    strtab: (usize, usize),
    sections: Vec<Section>,
    /// The `.BTF` section's bytes in the file (kernels built with CONFIG_DEBUG_INFO_BTF).
    btf: Option<(usize, usize)>,
}

fn guarded<T>(work: impl FnOnce() -> Option<T>) -> Option<T> {
    catch_unwind(AssertUnwindSafe(work)).ok().flatten()
}

impl ElfSymtab {
    pub fn parse(data: &[u8]) -> Result<(ElfSymtab, ElfFacts), SymbolFault> {
        guarded(|| Some(Self::parse_unguarded(data))).unwrap_or(Err(SymbolFault::Unrecognized))
    }

    fn parse_unguarded(data: &[u8]) -> Result<(ElfSymtab, ElfFacts), SymbolFault> {
        let header = Elf::parse_header(data).map_err(|_| SymbolFault::Unrecognized)?;
        let container = header.container().map_err(|_| SymbolFault::Unrecognized)?;
        let endian = header.endianness().map_err(|_| SymbolFault::Unrecognized)?;
        let ctx = Ctx::new(container, endian);
        let shoff = usize::try_from(header.e_shoff).map_err(|_| SymbolFault::NoSymbolTable)?;
        let shdrs = SectionHeader::parse(data, shoff, usize::from(header.e_shnum), ctx)
            .map_err(|_| SymbolFault::NoSymbolTable)?;
        let sections: Vec<Section> = shdrs
            .iter()
            .map(|sh| Section {
                sh_type: sh.sh_type,
                flags: sh.sh_flags,
                addr: sh.sh_addr,
                offset: sh.sh_offset,
                size: sh.sh_size,
            })
            .collect();
        let facts = ElfFacts {
            machine: translate::elf_machine(header.e_machine, container.is_big()).map(|m| m.name),
            build_id: build_id(data, &sections, endian.is_little()),
        };
        let symtab = shdrs
            .iter()
            .find(|sh| sh.sh_type == SHT_SYMTAB)
            .ok_or(SymbolFault::NoSymbolTable)?;
        let entsize = goblin::elf::sym::Sym::size(container) as u64;
        let strtab = shdrs
            .get(symtab.sh_link as usize)
            .ok_or(SymbolFault::NoSymbolTable)?;
        let in_file = |offset: u64, size: u64| {
            offset
                .checked_add(size)
                .is_some_and(|end| end <= data.len() as u64)
        };
        if !in_file(symtab.sh_offset, symtab.sh_size) || !in_file(strtab.sh_offset, strtab.sh_size)
        {
            return Err(SymbolFault::NoSymbolTable);
        }
        // Within the file (checked above), so within usize.
        let to_usize = |n: u64| usize::try_from(n).map_err(|_| SymbolFault::NoSymbolTable);
        let symtab_count = to_usize(
            symtab
                .sh_size
                .checked_div(entsize)
                .ok_or(SymbolFault::NoSymbolTable)?,
        )?;
        let btf = section_named(data, &shdrs, usize::from(header.e_shstrndx), b".BTF");
        let table = ElfSymtab {
            btf,
            ctx,
            symtab_offset: to_usize(symtab.sh_offset)?,
            symtab_count,
            strtab: (to_usize(strtab.sh_offset)?, to_usize(strtab.sh_size)?),
            sections,
        };
        if symtab_count == 0 || table.symtab(data).is_none() {
            return Err(SymbolFault::NoSymbolTable);
        }
        Ok((table, facts))
    }

    fn symtab<'a>(&self, data: &'a [u8]) -> Option<Symtab<'a>> {
        Symtab::parse(data, self.symtab_offset, self.symtab_count, self.ctx).ok()
    }

    pub fn symbol_count(&self) -> usize {
        self.symtab_count
    }

    /// The `nm` letter of a symbol, from its binding, type and section.
    fn letter(&self, info: u8, shndx: usize) -> Option<u8> {
        let kind = info & 0xf;
        if kind == STT_SECTION || kind == STT_FILE {
            return None;
        }
        let letter = match shndx {
            SHN_UNDEF => b'U',
            SHN_ABS => b'A',
            SHN_COMMON => b'C',
            shndx => match self.sections.get(shndx) {
                Some(sec) if sec.sh_type == SHT_NOBITS => b'B',
                Some(sec) if sec.flags & u64::from(SHF_EXECINSTR) != 0 => b'T',
                Some(sec) if sec.flags & u64::from(SHF_ALLOC) == 0 => b'N',
                Some(sec) if sec.flags & u64::from(SHF_WRITE) == 0 => b'R',
                _ => b'D',
            },
        };
        Some(match info >> 4 {
            STB_WEAK if kind == STT_OBJECT => b'V',
            STB_WEAK => b'W',
            STB_GLOBAL => letter,
            STB_LOCAL => letter.to_ascii_lowercase(),
            _ => letter,
        })
    }

    /// Every named symbol, in table order. The entries are read directly (a fixed 16- or
    /// 24-byte layout) rather than through goblin's iterator: this loop runs over 127,000
    /// symbols at open and again for the index, and field reads cost a third as much.
    pub fn for_each(&self, data: &[u8], visit: &mut impl FnMut(&[u8], usize, Symbol)) {
        let (str_off, str_len) = self.strtab;
        let Some(strtab) = str_off
            .checked_add(str_len)
            .and_then(|end| data.get(str_off..end))
        else {
            return;
        };
        let wide = self.ctx.is_big();
        let entry = if wide { 24 } else { 16 };
        let Some(table) = self
            .symtab_count
            .checked_mul(entry)
            .and_then(|len| self.symtab_offset.checked_add(len))
            .and_then(|end| data.get(self.symtab_offset..end))
        else {
            return;
        };
        let big_endian = !self.ctx.is_little_endian();
        for raw in table.chunks_exact(entry) {
            let f = Fields::new(raw, big_endian);
            let fields = if wide {
                (f.u32(0), raw.get(4).copied(), f.u16(6), f.u64(8))
            } else {
                (
                    f.u32(0),
                    raw.get(12).copied(),
                    f.u16(14),
                    f.u32(4).map(u64::from),
                )
            };
            let (Some(name_at), Some(info), Some(shndx), Some(value)) = fields else {
                continue;
            };
            let Some(letter) = self.letter(info, usize::from(shndx)) else {
                continue;
            };
            let name_at = name_at as usize;
            let Some(rest) = strtab.get(name_at..) else {
                continue;
            };
            // A name ends at its NUL within MAX_NAME bytes; a string table without one (a
            // damaged file) must not make every symbol scan to its end.
            let window = rest.get(..MAX_NAME).unwrap_or(rest);
            let Some(len) = memchr::memchr(0, window) else {
                continue;
            };
            let Some(name) = rest.get(..len).filter(|n| !n.is_empty()) else {
                continue;
            };
            // The name lies in the string table, whose end was checked above.
            let Some(name_pos) = str_off.checked_add(name_at) else {
                continue;
            };
            visit(name, name_pos, Symbol { value, letter });
        }
    }

    /// The `.BTF` section's bytes, where the image has one.
    pub fn btf<'a>(&self, data: &'a [u8]) -> Option<&'a [u8]> {
        let (offset, size) = self.btf?;
        data.get(offset..offset.checked_add(size)?)
    }

    /// File bytes behind link-time address `addr`, from the allocated section holding it.
    pub fn image_bytes<'a>(&self, data: &'a [u8], addr: u64, len: usize) -> Option<&'a [u8]> {
        let (sec, within) = self.sections.iter().find_map(|s| {
            if s.sh_type == SHT_NOBITS || s.flags & u64::from(SHF_ALLOC) == 0 {
                return None;
            }
            Some((s, addr.checked_sub(s.addr).filter(|&w| w < s.size)?))
        })?;
        // What the section holds from `addr`, clamped to `len`.
        let len = usize::try_from(sec.size.checked_sub(within)?).map_or(len, |n| n.min(len));
        let start = usize::try_from(sec.offset.checked_add(within)?).ok()?;
        data.get(start..start.checked_add(len)?)
    }
}

/// Where the section called `name` lies in the file: (offset, size), within the file.
fn section_named(
    data: &[u8],
    shdrs: &[SectionHeader],
    shstrndx: usize,
    name: &[u8],
) -> Option<(usize, usize)> {
    let names = shdrs.get(shstrndx)?;
    let start = usize::try_from(names.sh_offset).ok()?;
    let names = data.get(start..start.checked_add(usize::try_from(names.sh_size).ok()?)?)?;
    shdrs.iter().find_map(|sh| {
        let at = sh.sh_name;
        let end = at.checked_add(name.len())?;
        if names.get(at..end)? != name || names.get(end) != Some(&0) || sh.sh_type == SHT_NOBITS {
            return None;
        }
        let offset = usize::try_from(sh.sh_offset).ok()?;
        let size = usize::try_from(sh.sh_size).ok()?;
        data.get(offset..offset.checked_add(size)?)?;
        Some((offset, size))
    })
}

fn build_id(data: &[u8], sections: &[Section], little_endian: bool) -> Option<String> {
    for sec in sections.iter().filter(|s| s.sh_type == SHT_NOTE) {
        let start = usize::try_from(sec.offset).ok()?;
        let raw = data.get(start..start.checked_add(usize::try_from(sec.size).ok()?)?)?;
        for note in Notes::new(raw, !little_endian).map_while(Result::ok) {
            if note.name == b"GNU" && note.n_type == NT_GNU_BUILD_ID {
                return Some(note.desc.iter().map(|b| format!("{b:02x}")).collect());
            }
        }
    }
    None
}
