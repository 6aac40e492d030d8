//! Decoders of kernel data structures that need nothing but a reader of kernel memory and
//! the machine's word layout (no debug info): the kernel log, the kallsyms tables, the system
//! facts (load average, taint, uptime, CPUs), and (with layouts from BTF) the task and
//! module lists.

#![deny(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]

pub mod builds;
pub mod dmesg;
pub mod kallsyms;
pub mod list;
pub mod module_symbols;
pub mod modules;
pub mod system;
pub mod tasks;

use crate::btf::Btf;
use crate::errors::Error;
use crate::formats::{Core, Fields};

/// An error with the reason a read failed, where there is one (`invalid address (0x…):
/// excluded`).
pub fn describe(error: &Error) -> String {
    match error.reason() {
        Some(reason) => format!("{error}: {}", reason.text()),
        None => error.to_string(),
    }
}

/// The byte offset of a member path in struct `of`, or what BTF lacks (`"owner.path"`).
pub fn member_offset(btf: &Btf, of: u32, path: &str, owner: &str) -> Result<u64, String> {
    btf.offset_of(of, path)
        .map(|(offset, _)| offset)
        .ok_or_else(|| format!("{owner}.{path}"))
}

/// Reads kernel virtual memory: the bytes at an address, or why not.
pub type ReadFn<'a> = &'a dyn Fn(u64, usize) -> Result<Vec<u8>, Error>;

/// How the dumped kernel lays out its integers: byte order and the width of `long`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words {
    pub big_endian: bool,
    /// `long` and pointers are 8 bytes.
    pub wide: bool,
}

impl Words {
    pub fn of(core: &Core) -> Words {
        Words {
            big_endian: core.big_endian,
            wide: core.machine_record().is_none_or(|m| m.wide),
        }
    }

    pub fn long_bytes(&self) -> u64 {
        self.long_len() as u64
    }

    fn long_len(&self) -> usize {
        if self.wide {
            8
        } else {
            4
        }
    }

    fn fields<'a>(&self, raw: &'a [u8]) -> Fields<'a> {
        Fields::new(raw, self.big_endian)
    }

    /// The integer at `at` in `raw`; 0 where `raw` is too short (a decoder bounds its
    /// reads by what it asked for, so a short buffer is a corrupt structure, read as empty).
    pub fn u16(&self, raw: &[u8], at: u64) -> u16 {
        usize::try_from(at)
            .ok()
            .and_then(|at| self.fields(raw).u16(at))
            .unwrap_or(0)
    }

    pub fn u32(&self, raw: &[u8], at: u64) -> u32 {
        usize::try_from(at)
            .ok()
            .and_then(|at| self.fields(raw).u32(at))
            .unwrap_or(0)
    }

    pub fn u64(&self, raw: &[u8], at: u64) -> u64 {
        usize::try_from(at)
            .ok()
            .and_then(|at| self.fields(raw).u64(at))
            .unwrap_or(0)
    }

    /// A `long` or pointer.
    pub fn long(&self, raw: &[u8], at: u64) -> u64 {
        usize::try_from(at)
            .ok()
            .and_then(|at| self.fields(raw).word(at, self.wide))
            .unwrap_or(0)
    }

    pub fn read_long(&self, read: ReadFn<'_>, addr: u64) -> Result<u64, Error> {
        Ok(self.long(&read(addr, self.long_len())?, 0))
    }

    pub fn read_u32(&self, read: ReadFn<'_>, addr: u64) -> Result<u32, Error> {
        Ok(self.u32(&read(addr, 4)?, 0))
    }
}
