//! The kvm handle: an exec file, a core file and what open learned about them. No PyO3 here;
//! a `Session` is `Send + Sync` and is shared by every thread that reads through a handle.
//!
//! `open` runs the steps of SPEC §2; `memory` turns kernel virtual addresses into bytes
//! (translate, read, write planning); `facts` describes the dump. The session matches on no
//! format and names no machine: it holds a `Core` (behind the `CoreFormat` trait) and the
//! machine's translator.

mod facts;
mod memory;
mod open;
pub mod stack;
mod system;
mod triage;

use std::fs::File;
use std::sync::{Arc, OnceLock};

pub use facts::{DumpFacts, Info};
pub use open::{OpenRequest, KVM_NO_FILES, PATH_MAX};
pub use stack::Frame;
pub use system::SystemFacts;
pub use triage::{BtfSource, BTF_BUILDS, MAX_BTF_BYTES};

use crate::errors::{Error, Result};
use crate::formats::Core;
use crate::identity::Identity;
use crate::kernel::{kallsyms, Words};
use crate::symbols::decoded::DecodedTable;
use crate::symbols::ExecFile;
use crate::translate::Translate;

/// How many of the dump's kallsyms entries a thin exec file is compared with.
const KALLSYMS_SAMPLE: usize = 4096;

/// Where the handle's symbols come from.
enum Symbols {
    None,
    File(Arc<ExecFile>),
    /// The dump's kallsyms tables, decoded on first use.
    Core(Box<OnceLock<std::result::Result<ExecFile, Error>>>),
}

pub struct Session {
    symbols: Symbols,
    core: Option<Core>,
    core_path: Vec<u8>,
    identity: Option<Identity>,
    translator: Option<Box<dyn Translate>>,
    access: i32,
    /// The core as opened with the caller's flags: the descriptor `kvm_write` uses.
    core_file: Option<File>,
    /// The swap file of a live kernel, held open for the handle's life (libkvm accepts it
    /// for compatibility; nothing reads it).
    _swap_file: Option<File>,
    /// BTF and the layouts read from it, loaded by the first triage call.
    triage: triage::TriageCache,
    /// What backtraces of other tasks read once: layouts, the module list.
    stacks: stack::StackCache,
}

impl Session {
    /// A handle with no files (KVM_NO_FILES).
    pub fn no_files() -> Session {
        Session {
            symbols: Symbols::None,
            core: None,
            core_path: Vec::new(),
            identity: None,
            translator: None,
            access: libc::O_RDONLY,
            core_file: None,
            _swap_file: None,
            triage: triage::TriageCache::default(),
            stacks: stack::StackCache::default(),
        }
    }

    /// Reads kernel memory for the kallsyms decoder: what could be read, or the error.
    fn read_for_decoder(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        match self.read(addr, len) {
            (data, None) => Ok(data),
            (data, Some(_)) if !data.is_empty() => Ok(data),
            (_, Some(error)) => Err(error),
        }
    }

    /// The dump's kallsyms tables, where VMCOREINFO names them; None otherwise.
    fn core_symbols(&self, limit: usize) -> Option<Result<Vec<kallsyms::CoreSymbol>>> {
        let core = self.core.as_ref()?;
        let tables = kallsyms::Tables::from_vmcoreinfo(&core.vmcoreinfo)?;
        let read = |addr: u64, len: usize| self.read_for_decoder(addr, len);
        Some(
            kallsyms::decode(&read, Words::of(core), &tables, limit)
                .map_err(|e| self.name_decoder_error(e)),
        )
    }

    /// The dump's kallsyms tables decoded whole.
    fn core_symbols_table(&self) -> Result<DecodedTable> {
        let core = self.core.as_ref().ok_or(Error::BadNamelist)?;
        let tables =
            kallsyms::Tables::from_vmcoreinfo(&core.vmcoreinfo).ok_or(Error::BadNamelist)?;
        let read = |addr: u64, len: usize| self.read_for_decoder(addr, len);
        kallsyms::decode_table(&read, Words::of(core), &tables, &core.vmcoreinfo)
            .map_err(|e| self.name_decoder_error(e))
    }

    fn name_decoder_error(&self, error: Error) -> Error {
        match error {
            Error::Core { fault, .. } => Error::core(&self.core_path, fault),
            other => other,
        }
    }

    /// An exec file that matched the dump only on `_stext` (a text-only kallsyms of an
    /// unrandomized kernel) is compared with a sample of the dump's own kallsyms.
    fn check_kallsyms_sample(&self) -> Result<()> {
        let Symbols::File(exec) = &self.symbols else {
            return Ok(());
        };
        let Some(sample) = self.core_symbols(KALLSYMS_SAMPLE) else {
            return Ok(());
        };
        let sample = sample?;
        let names: Vec<String> = sample
            .iter()
            .map(|s| String::from_utf8_lossy(&s.name).into_owned())
            .collect();
        let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        let found = exec.lookup_few(&wanted);
        let link_time = exec.format.is_link_time();
        let mut compared = 0usize;
        for (sym, name) in sample.iter().zip(&names) {
            let Some(mine) = found.get(name) else {
                continue;
            };
            let value = self
                .identity
                .as_ref()
                .map_or(mine.value, |i| i.relocate(mine.value, link_time));
            if value != sym.value {
                return Err(Error::Mismatch {
                    exec: exec.path.clone(),
                    core: self.core_path.clone(),
                    field: "kallsyms".into(),
                    exec_value: format!("{name}={value:#x}"),
                    core_value: format!("{name}={:#x}", sym.value),
                });
            }
            compared += 1;
        }
        if compared == 0 {
            return Err(Error::Mismatch {
                exec: exec.path.clone(),
                core: self.core_path.clone(),
                field: "kallsyms".into(),
                exec_value: "no symbol in common".into(),
                core_value: format!("{} sampled symbols", sample.len()),
            });
        }
        Ok(())
    }

    /// The kernel log, decoded with VMCOREINFO alone.
    pub fn dmesg(&self) -> Result<Vec<crate::kernel::dmesg::Record>> {
        self.dmesg_with(&crate::cancel::NEVER)
    }

    /// `dmesg`, stopping with `Error::Interrupted` once `cancel` is set.
    pub fn dmesg_with(
        &self,
        cancel: &crate::cancel::Cancel,
    ) -> Result<Vec<crate::kernel::dmesg::Record>> {
        let core = self.readable_core("kvm_read")?;
        let read = |addr: u64, len: usize| match self.read_with(addr, len, cancel) {
            (data, None) => Ok(data),
            (_, Some(error)) => Err(error),
        };
        crate::kernel::dmesg::records(&read, &core.vmcoreinfo, Words::of(core))
            .map_err(|e| self.name_decoder_error(e))
    }

    /// The symbol table: the exec file, or the dump's kallsyms decoded on first use.
    fn exec_file(&self) -> Result<&ExecFile> {
        match &self.symbols {
            Symbols::None => Err(Error::BadNamelist),
            Symbols::File(exec) => Ok(exec),
            Symbols::Core(cell) => cell
                .get_or_init(|| {
                    let table = self.core_symbols_table()?;
                    ExecFile::decoded(&self.core_path, table).map_err(|fault| Error::Symbols {
                        path: self.core_path.clone(),
                        fault,
                    })
                })
                .as_ref()
                .map_err(Clone::clone),
        }
    }

    /// The exec file, when it is a file or has been decoded already (no work done here).
    pub fn exec(&self) -> Option<&ExecFile> {
        match &self.symbols {
            Symbols::File(exec) => Some(exec),
            Symbols::Core(cell) => cell.get().and_then(|r| r.as_ref().ok()),
            Symbols::None => None,
        }
    }

    /// Whether the handle has a symbol table at all (an exec file, or kallsyms tables the
    /// dump names): a scan without an exec file opens a pre-6.0 dump without one.
    pub fn has_symbols(&self) -> bool {
        !matches!(self.symbols, Symbols::None)
    }

    /// Whether `nlist` has everything it needs already (no index build or decode pending).
    pub fn symbols_ready(&self) -> bool {
        match &self.symbols {
            Symbols::None => true,
            Symbols::File(exec) => exec.index_built(),
            Symbols::Core(cell) => cell
                .get()
                .is_some_and(|r| r.as_ref().map_or(true, ExecFile::index_built)),
        }
    }

    pub fn core(&self) -> Option<&Core> {
        self.core.as_ref()
    }

    pub fn access(&self) -> i32 {
        self.access
    }

    /// `kvm_nlist` for a list of names: `Some((n_type, runtime value))` for each name found.
    /// A name not found is retried without one leading underscore (`_jiffies` → `jiffies`).
    pub fn nlist(&self, names: &[Vec<u8>]) -> Result<Vec<Option<(u8, u64)>>> {
        let exec = self.exec_file()?;
        let index = exec.index();
        let data = exec.data();
        let link_time = exec.format.is_link_time();
        Ok(names
            .iter()
            .map(|name| {
                let sym = index.get(data, name).or_else(|| {
                    name.strip_prefix(b"_")
                        .and_then(|bare| index.get(data, bare))
                })?;
                let value = match &self.identity {
                    Some(identity) => identity.relocate(sym.value, link_time),
                    None => sym.value,
                };
                Some((sym.n_type(), value))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{self, Origin};
    use crate::mapping::{Medium, PreadFile};
    use std::io::Write;

    const DIRECT_MAP: u64 = 0xffff_8880_0010_0000;

    /// A /proc/kcore-shaped ELF: a VMCOREINFO note and one PT_LOAD at a direct-map address.
    fn kcore_image(data: &[u8]) -> Vec<u8> {
        let desc = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\n";
        let mut note = Vec::new();
        note.extend_from_slice(&11u32.to_le_bytes());
        note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        note.extend_from_slice(&0u32.to_le_bytes());
        note.extend_from_slice(b"VMCOREINFO\0\0");
        note.extend_from_slice(desc);
        while note.len() % 4 != 0 {
            note.push(0);
        }
        let note_at = 64 + 2 * 56u64;
        let data_at = 0x1000u64;
        let mut out = Vec::new();
        out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        out.extend_from_slice(&4u16.to_le_bytes()); // ET_CORE
        out.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // e_entry
        out.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        out.extend_from_slice(&0u32.to_le_bytes());
        for half in [64u16, 56, 2, 64, 0, 0] {
            out.extend_from_slice(&half.to_le_bytes());
        }
        let phdr =
            |out: &mut Vec<u8>, p_type: u32, offset: u64, vaddr: u64, paddr: u64, size: u64| {
                out.extend_from_slice(&p_type.to_le_bytes());
                out.extend_from_slice(&7u32.to_le_bytes());
                for field in [offset, vaddr, paddr, size, size, 0x1000] {
                    out.extend_from_slice(&field.to_le_bytes());
                }
            };
        phdr(&mut out, 4, note_at, 0, 0, note.len() as u64);
        phdr(
            &mut out,
            1,
            data_at,
            DIRECT_MAP,
            0x10_0000,
            data.len() as u64,
        );
        out.extend_from_slice(&note);
        out.resize(data_at as usize, 0);
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn live_kcore_reads_through_pread() {
        let data: Vec<u8> = (0..0x2000u32).map(|i| (i * 7 % 256) as u8).collect();
        let path = std::env::temp_dir().join(format!("kvm-rs-kcore-{}", std::process::id()));
        File::create(&path)
            .unwrap()
            .write_all(&kcore_image(&data))
            .unwrap();
        let file = File::open(&path).unwrap();
        // What Session::open does for a regular file on procfs: pread, never mmap.
        let medium: Arc<dyn Medium> = Arc::new(PreadFile::new(file, u64::MAX));
        let core = formats::open_core(medium, Origin::Procfs).unwrap();
        assert_eq!((core.format, core.live), ("kcore", true));
        let session = Session::assemble(
            Symbols::None,
            core,
            b"/proc/kcore".to_vec(),
            libc::O_RDONLY,
            None,
            None,
        )
        .unwrap();
        let (bytes, error) = session.read(DIRECT_MAP + 0xff8, 16);
        assert_eq!(error, None);
        assert_eq!(bytes, data[0xff8..0x1008]);
        let (bytes, error) = session.read(DIRECT_MAP + 0x1ff8, 16);
        assert_eq!(bytes, data[0x1ff8..]);
        assert_eq!(
            error,
            Some(Error::InvalidAddress {
                addr: DIRECT_MAP + 0x2000,
                reason: crate::errors::Reason::NotMapped
            })
        );
        assert_eq!(
            session.info().unwrap().osrelease.as_deref(),
            Some("6.1.0-test")
        );
        std::fs::remove_file(&path).unwrap();
    }
}
