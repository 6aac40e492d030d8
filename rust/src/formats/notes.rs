//! ELF notes (`Elf_Nhdr` + name + descriptor, 4-aligned), as ELF cores and the kdump
//! sub-header's note area carry them.

use std::sync::OnceLock;

use super::Fields;
use crate::errors::CoreFault;

/// `NT_PRSTATUS`: a CPU's `struct elf_prstatus` (its registers at the crash), named `CORE`.
pub const NT_PRSTATUS: u32 = 1;
/// More CPU notes than any kernel has CPUs (`NR_CPUS` is at most 8192); the rest are dropped.
pub const MAX_CPU_NOTES: usize = 8192;

/// One ELF note: name without its NUL, type, descriptor bytes.
pub struct Note<'a> {
    pub name: &'a [u8],
    pub n_type: u32,
    pub desc: &'a [u8],
}

/// Iterates the notes of a note segment; a note that runs past the segment is an error.
pub struct Notes<'a> {
    raw: &'a [u8],
    big_endian: bool,
    pos: usize,
}

impl Note<'_> {
    /// A CPU's registers at the crash (QEMU and the kernel's crash notes both write them).
    pub fn is_prstatus(&self) -> bool {
        self.name == b"CORE" && self.n_type == NT_PRSTATUS
    }
}

/// A core's note areas, kept as read at open, and its CPUs' `NT_PRSTATUS` descriptors (one
/// per CPU, in the order the producer wrote them, up to `MAX_CPU_NOTES`) picked out of them
/// on first use: an open copies no registers, however many CPUs the machine had.
#[derive(Default)]
pub struct CpuNotes {
    areas: Vec<Vec<u8>>,
    big_endian: bool,
    prstatus: OnceLock<Vec<Vec<u8>>>,
}

impl CpuNotes {
    /// `areas`: note segments the open has walked already (a malformed note ends a walk).
    pub fn new(areas: Vec<Vec<u8>>, big_endian: bool) -> CpuNotes {
        CpuNotes {
            areas,
            big_endian,
            prstatus: OnceLock::new(),
        }
    }

    pub fn get(&self) -> &[Vec<u8>] {
        self.prstatus.get_or_init(|| {
            self.areas
                .iter()
                .flat_map(|area| Notes::new(area, self.big_endian).map_while(Result::ok))
                .filter(Note::is_prstatus)
                .take(MAX_CPU_NOTES)
                .map(|note| note.desc.to_vec())
                .collect()
        })
    }
}

impl<'a> Notes<'a> {
    pub fn new(raw: &'a [u8], big_endian: bool) -> Notes<'a> {
        Notes {
            raw,
            big_endian,
            pos: 0,
        }
    }
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

impl<'a> Iterator for Notes<'a> {
    type Item = Result<Note<'a>, CoreFault>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.raw.get(self.pos..)?;
        // Producers pad the segment with zeros; an all-zero header ends the list.
        if rest.len() < 12 || rest.iter().take(12).all(|&b| b == 0) {
            return None;
        }
        let f = Fields::new(rest, self.big_endian);
        let malformed = || Some(Err(CoreFault::Invalid("malformed note".into())));
        let (Some(namesz), Some(descsz), Some(n_type)) = (f.u32(0), f.u32(4), f.u32(8)) else {
            return malformed();
        };
        let name_start = 12usize;
        let Some(desc_start) = align4(namesz as usize).and_then(|n| n.checked_add(name_start))
        else {
            return malformed();
        };
        let Some(desc_end) = desc_start.checked_add(descsz as usize) else {
            return malformed();
        };
        let Some(name_end) = name_start.checked_add(namesz as usize) else {
            return malformed();
        };
        let (Some(name), Some(desc)) = (
            rest.get(name_start..name_end),
            rest.get(desc_start..desc_end),
        ) else {
            return malformed();
        };
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        self.pos = match align4(desc_end).and_then(|n| n.checked_add(self.pos)) {
            Some(next) => next,
            None => self.raw.len(),
        };
        Some(Ok(Note { name, n_type, desc }))
    }
}
