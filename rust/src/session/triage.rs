//! Triage reads (SPEC §14): the kernel's types from BTF, loaded once per handle, and the
//! task list read with them. Open never needs BTF; the first triage call loads it.

use std::sync::{Arc, OnceLock};

use super::Session;
use crate::btf::{Btf, BtfError};
use crate::cancel::Cancel;
use crate::errors::{Error, Result};
use crate::kernel::builds::{self, BuildCache};
use crate::kernel::modules::ModuleLayout;
use crate::kernel::tasks::{self, TaskLayout, TaskList};
use crate::kernel::Words;

/// The most BTF read from a dump's memory (real kernels carry 3-6 MiB).
pub const MAX_BTF_BYTES: u64 = 64 << 20;

/// The parsed BTF of each build, shared by its dumps (kernel::builds).
pub static BTF_BUILDS: BuildCache<Btf> = BuildCache::new();
/// How much of each end of the BTF goes in the key.
const BTF_KEY_PAGE: usize = 4096;

/// Where the handle's types came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BtfSource {
    /// The exec file's `.BTF` section.
    ExecSection,
    /// The dump's memory between `__start_BTF` and `__stop_BTF`.
    Memory,
}

/// What the first triage call loads and later ones reuse.
#[derive(Default)]
pub(super) struct TriageCache {
    btf: OnceLock<Result<(Arc<Btf>, BtfSource)>>,
    tasks: OnceLock<Result<TaskLayout>>,
    pub(super) modules: OnceLock<Result<ModuleLayout>>,
}

impl Session {
    /// The kernel's BTF and where it came from: the exec file's `.BTF` section when it has
    /// one, else the dump's memory. Loaded on first use; an interrupted load is not kept.
    pub fn btf_with(&self, cancel: &Cancel) -> Result<(Arc<Btf>, BtfSource)> {
        let cell = &self.triage.btf;
        if let Some(done) = cell.get() {
            return done.clone();
        }
        let loaded = self.load_btf(cancel);
        if matches!(loaded, Err(Error::Interrupted)) {
            return Err(Error::Interrupted);
        }
        cell.get_or_init(|| loaded).clone()
    }

    fn load_btf(&self, cancel: &Cancel) -> Result<(Arc<Btf>, BtfSource)> {
        self.readable_core("kvm_getprocs")?;
        let no_btf = || Error::NoBtf {
            path: self.core_path.clone(),
        };
        let refused = |path: &[u8], error: BtfError| match error {
            BtfError::NoMagic => no_btf(),
            BtfError::Invalid(what) => Error::Triage {
                path: path.to_vec(),
                what: format!("invalid BTF: {what}"),
            },
        };
        if let Some(exec) = self.exec() {
            if let Some(section) = exec.btf_section() {
                return Btf::parse(section.to_vec())
                    .map(|btf| (Arc::new(btf), BtfSource::ExecSection))
                    .map_err(|e| refused(&exec.path, e));
            }
        }
        let found = self.nlist(&[
            b"__start_BTF".to_vec(),
            b"__stop_BTF".to_vec(),
            b"init_task".to_vec(),
        ])?;
        let (Some(Some((_, start))), Some(Some((_, stop)))) = (found.first(), found.get(1)) else {
            if found.get(2).is_some_and(Option::is_none) {
                return Err(self.no_data_symbols());
            }
            return Err(no_btf());
        };
        let size = stop
            .checked_sub(*start)
            .filter(|&n| n > 0 && n <= MAX_BTF_BYTES)
            .ok_or_else(no_btf)?;
        let size = usize::try_from(size).map_err(|_| no_btf())?;
        let key = self.btf_key(*start, size, cancel);
        if let Some(btf) = key.as_deref().and_then(|key| BTF_BUILDS.get(key)) {
            return Ok((btf, BtfSource::Memory));
        }
        let data = match self.read_with(*start, size, cancel) {
            (data, None) => data,
            (_, Some(Error::Interrupted)) => return Err(Error::Interrupted),
            (_, Some(_)) => return Err(no_btf()),
        };
        let btf = Arc::new(Btf::parse(data).map_err(|e| refused(&self.core_path, e))?);
        if let Some(key) = key {
            BTF_BUILDS.put(key, Arc::clone(&btf));
        }
        Ok((btf, BtfSource::Memory))
    }

    /// What tells this dump's BTF from another build's without reading it all: the build,
    /// the size, and the first and last page (the header with its section lengths, and the
    /// end of the string section).
    fn btf_key(&self, start: u64, size: usize, cancel: &Cancel) -> Option<Vec<u8>> {
        let mut key = builds::build_key(&self.core.as_ref()?.vmcoreinfo)?;
        key.extend_from_slice(&(size as u64).to_le_bytes());
        let edge = size.min(BTF_KEY_PAGE);
        let last = start.checked_add((size - edge) as u64)?;
        for at in [start, last] {
            let (bytes, None) = self.read_with(at, edge, cancel) else {
                return None;
            };
            key.extend_from_slice(&bytes);
        }
        Some(key)
    }

    /// The symbol table lacks `init_task`, which every kernel has: a kallsyms of text
    /// symbols only (the dump's own, on kernels built without CONFIG_KALLSYMS_ALL).
    pub(super) fn no_data_symbols(&self) -> Error {
        let path = self
            .exec()
            .map_or_else(|| self.core_path.clone(), |e| e.path.clone());
        Error::Triage {
            path,
            what: "no symbol init_task (a symbol table of text symbols only, as a kernel \
                   built without CONFIG_KALLSYMS_ALL keeps): give a System.map or vmlinux"
                .into(),
        }
    }

    /// A layout read from BTF once per handle; what BTF lacks is the error.
    pub(super) fn layout<'a, T>(
        &self,
        cell: &'a OnceLock<Result<T>>,
        build: impl FnOnce() -> std::result::Result<T, String>,
    ) -> Result<&'a T> {
        cell.get_or_init(|| {
            build().map_err(|missing| Error::Triage {
                path: self.core_path.clone(),
                what: format!("BTF has no {missing}"),
            })
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    fn task_layout(&self, btf: &Btf, words: Words) -> Result<&TaskLayout> {
        self.layout(&self.triage.tasks, || TaskLayout::from_btf(btf, words))
    }

    /// `kvm_getprocs`: every task reachable from `init_task` (SPEC §14).
    pub fn tasks_with(&self, cancel: &Cancel) -> Result<TaskList> {
        let core = self.readable_core("kvm_getprocs")?;
        let words = Words::of(core);
        let (btf, _) = self.btf_with(cancel)?;
        let layout = self.task_layout(&btf, words)?;
        let found = self.nlist(&[b"init_task".to_vec(), b"nr_threads".to_vec()])?;
        let Some(Some((_, init_task))) = found.first() else {
            return Err(self.no_data_symbols());
        };
        let read = |addr: u64, len: usize| match self.read_with(addr, len, cancel) {
            (data, None) => Ok(data),
            (_, Some(error)) => Err(error),
        };
        let nr_threads = found
            .get(1)
            .copied()
            .flatten()
            .and_then(|(_, at)| words.read_u32(&read, at).ok())
            .map(u64::from);
        tasks::walk(&read, words, layout, *init_task, nr_threads, cancel)
            .map_err(|e| self.name_decoder_error(e))
    }
}
