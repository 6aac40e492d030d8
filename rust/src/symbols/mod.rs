//! Exec files: the kernel's symbol table, from an ELF image (`.symtab`), from text in the
//! `nm` form (/proc/kallsyms, System.map), or decoded from the dump's own kallsyms. Open
//! validates the format and looks up only the handful of names the identity check needs; the
//! full name index waits for `nlist`.

#![deny(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]

pub mod by_addr;
pub mod cache;
pub mod decoded;
pub mod elf;
pub mod index;
pub mod text;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::errors::SymbolFault;
use crate::mapping::MappedFile;
use by_addr::AddrIndex;
use decoded::{DecodedTable, NameList};
use index::NameIndex;

/// Names remembered by `lookup_few` per exec file (a kernel's VMCOREINFO names ~30).
const MEMO_NAMES: usize = 4096;

pub const N_UNDF: u8 = 0x00;
pub const N_EXT: u8 = 0x01;
pub const N_ABS: u8 = 0x02;
pub const N_TEXT: u8 = 0x04;
pub const N_DATA: u8 = 0x06;
pub const N_BSS: u8 = 0x08;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFormat {
    Elf,
    Kallsyms,
    SystemMap,
}

impl ExecFormat {
    pub fn name(self) -> &'static str {
        match self {
            ExecFormat::Elf => "elf",
            ExecFormat::Kallsyms => "kallsyms",
            ExecFormat::SystemMap => "system.map",
        }
    }

    /// kallsyms already holds runtime addresses; ELF and System.map hold link-time ones.
    pub fn is_link_time(self) -> bool {
        self != ExecFormat::Kallsyms
    }
}

/// A symbol as the exec file states it (link-time value for ELF and System.map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol {
    pub value: u64,
    /// `nm` letter: upper case for global symbols.
    pub letter: u8,
}

impl Symbol {
    /// The BSD `n_type` of this symbol.
    pub fn n_type(&self) -> u8 {
        let base = match self.letter.to_ascii_uppercase() {
            b'T' | b'W' => N_TEXT,
            b'D' | b'R' | b'G' | b'V' => N_DATA,
            b'B' | b'S' | b'C' => N_BSS,
            b'A' => N_ABS,
            _ => N_UNDF,
        };
        if self.letter.is_ascii_uppercase() {
            base | N_EXT
        } else {
            base
        }
    }

    pub fn is_global(&self) -> bool {
        self.letter.is_ascii_uppercase()
    }
}

pub enum ExecBytes {
    Mapped(MappedFile),
    Owned(Vec<u8>),
    /// The names of a decoded kallsyms table, shared by the dumps of one build.
    Names(Arc<NameList>),
}

impl ExecBytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ExecBytes::Mapped(map) => map.as_slice(),
            ExecBytes::Owned(bytes) => bytes,
            ExecBytes::Names(names) => names.bytes(),
        }
    }
}

/// The facts of an ELF image beyond its symbols.
#[derive(Debug, Clone, Default)]
pub struct ElfFacts {
    pub machine: Option<&'static str>,
    pub build_id: Option<String>,
}

/// How the symbols lie in the exec file's bytes.
enum Layout {
    Elf(elf::ElfSymtab),
    /// `nm` text, parsed line by line.
    Text,
    /// Decoded already: the bytes are the names.
    Decoded(DecodedTable),
}

pub struct ExecFile {
    pub path: Vec<u8>,
    pub format: ExecFormat,
    bytes: ExecBytes,
    layout: Layout,
    pub facts: ElfFacts,
    index: OnceLock<NameIndex>,
    /// Text symbols by address, built on the first backtrace.
    by_address: OnceLock<AddrIndex>,
    /// Results of earlier `lookup_few` calls (misses included): the identity check of every
    /// dump of one kernel asks for the same names.
    looked_up: Mutex<HashMap<String, Option<Symbol>>>,
}

impl ExecFile {
    /// Recognises the format by content and validates it; builds no index.
    pub fn parse(
        path: &[u8],
        bytes: ExecBytes,
        from_procfs: bool,
    ) -> Result<ExecFile, SymbolFault> {
        let data = bytes.as_slice();
        if data.is_empty() {
            return Err(SymbolFault::Empty);
        }
        let (format, layout, facts) = if data.starts_with(crate::formats::ELF_MAGIC) {
            let (symtab, facts) = elf::ElfSymtab::parse(data)?;
            (ExecFormat::Elf, Layout::Elf(symtab), facts)
        } else {
            let format = text::detect(data, from_procfs)?;
            (format, Layout::Text, ElfFacts::default())
        };
        Ok(ExecFile::assemble(path, format, bytes, layout, facts))
    }

    /// The dump's own kallsyms, decoded: runtime addresses, like /proc/kallsyms.
    pub fn decoded(path: &[u8], table: DecodedTable) -> Result<ExecFile, SymbolFault> {
        if table.count() == 0 {
            return Err(SymbolFault::Empty);
        }
        Ok(ExecFile::assemble(
            path,
            ExecFormat::Kallsyms,
            ExecBytes::Names(Arc::clone(table.names())),
            Layout::Decoded(table),
            ElfFacts::default(),
        ))
    }

    fn assemble(
        path: &[u8],
        format: ExecFormat,
        bytes: ExecBytes,
        layout: Layout,
        facts: ElfFacts,
    ) -> ExecFile {
        ExecFile {
            path: path.to_vec(),
            format,
            bytes,
            layout,
            facts,
            index: OnceLock::new(),
            by_address: OnceLock::new(),
            looked_up: Mutex::new(HashMap::new()),
        }
    }

    pub fn data(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// Calls `visit(name, symbol)` for every named symbol, in file order.
    pub fn for_each(&self, mut visit: impl FnMut(&[u8], usize, Symbol)) {
        match &self.layout {
            Layout::Elf(symtab) => symtab.for_each(self.data(), &mut visit),
            Layout::Text => text::for_each(self.data(), &mut visit),
            Layout::Decoded(table) => table.for_each(&mut visit),
        }
    }

    /// Symbols for a few names (global definitions preferred), without building the index:
    /// one pass over the table for the names not asked before, the rest from the memo. The
    /// memo is bounded: the exec file outlives its handles, and every dump's VMCOREINFO may
    /// ask for names of its own.
    pub fn lookup_few(&self, names: &[&str]) -> HashMap<String, Symbol> {
        let mut memo = self
            .looked_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut result = HashMap::new();
        let mut missing: Vec<&str> = Vec::new();
        for &name in names {
            match memo.get(name) {
                Some(Some(sym)) => {
                    result.insert(name.to_owned(), *sym);
                }
                Some(None) => {}
                None => missing.push(name),
            }
        }
        if missing.is_empty() {
            return result;
        }
        let fresh = match self.index.get() {
            Some(index) => missing
                .iter()
                .filter_map(|n| Some(((*n).to_owned(), index.get(self.data(), n.as_bytes())?)))
                .collect(),
            None => self.scan_for(&missing),
        };
        if memo.len().saturating_add(missing.len()) > MEMO_NAMES {
            memo.clear();
        }
        for name in missing {
            let hit = fresh.get(name).copied();
            if let Some(sym) = hit {
                result.insert(name.to_owned(), sym);
            }
            if memo.len() < MEMO_NAMES {
                memo.insert(name.to_owned(), hit);
            }
        }
        result
    }

    fn scan_for(&self, names: &[&str]) -> HashMap<String, Symbol> {
        let wanted: HashMap<&[u8], &str> = names.iter().map(|n| (n.as_bytes(), *n)).collect();
        // Most symbols share no (first byte, length) pair with a wanted name: a bit table
        // turns them away before any hashing.
        let mut shapes = [0u64; 256];
        let shape = |name: &[u8]| Some((usize::from(*name.first()?), name.len().min(63)));
        for name in names {
            if let Some((first, len)) = shape(name.as_bytes()) {
                if let Some(bits) = shapes.get_mut(first) {
                    *bits |= 1 << len;
                }
            }
        }
        let mut found: HashMap<String, Symbol> = HashMap::new();
        self.for_each(|name, _, sym| {
            let possible =
                shape(name).and_then(|(first, len)| Some(shapes.get(first)? & (1 << len) != 0));
            if possible != Some(true) {
                return;
            }
            if let Some(&key) = wanted.get(name) {
                let keep = found
                    .get(key)
                    .is_some_and(|old| old.is_global() || !sym.is_global());
                if !keep {
                    found.insert(key.to_owned(), sym);
                }
            }
        });
        found
    }

    /// How many symbols the table holds, for sizing the index (an upper bound).
    pub fn symbol_count_hint(&self) -> usize {
        match &self.layout {
            Layout::Elf(symtab) => symtab.symbol_count(),
            Layout::Text => memchr::memchr_iter(b'\n', self.data())
                .count()
                .saturating_add(1),
            Layout::Decoded(table) => table.count(),
        }
    }

    /// The name index, built on first use and shared by every later call and thread.
    pub fn index(&self) -> &NameIndex {
        self.index.get_or_init(|| NameIndex::build(self))
    }

    /// The address index (text symbols by value), built on first use.
    pub fn by_address(&self) -> &AddrIndex {
        self.by_address.get_or_init(|| AddrIndex::build(self))
    }

    pub fn index_built(&self) -> bool {
        self.index.get().is_some()
    }

    /// The `.BTF` section of an ELF image, where it has one.
    pub fn btf_section(&self) -> Option<&[u8]> {
        self.elf()?.btf(self.data())
    }

    /// The bytes an ELF image holds at link-time address `addr` (for `linux_banner`).
    pub fn image_bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.elf()?.image_bytes(self.data(), addr, len)
    }

    fn elf(&self) -> Option<&elf::ElfSymtab> {
        match &self.layout {
            Layout::Elf(symtab) => Some(symtab),
            Layout::Text | Layout::Decoded(_) => None,
        }
    }
}

/// A System.map exec file of `text`, for the tests of the indexes.
#[cfg(test)]
pub(crate) fn system_map(text: &str) -> ExecFile {
    let bytes = ExecBytes::Owned(text.as_bytes().to_vec());
    ExecFile::parse(b"System.map", bytes, false).expect("a System.map")
}
