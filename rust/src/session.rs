//! The kvm handle: an exec file, a core file and what open learned about them. No PyO3 here;
//! a `Session` is `Send + Sync` and is shared by every thread that reads through a handle.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use crate::errors::{Error, Result};
use crate::formats::{self, Core, Origin};
use crate::identity::{self, Identity};
use crate::mapping::{read_bounded, MappedFile, Medium, PreadFile};
use crate::symbols::{ExecBytes, ExecFile};

pub const KVM_NO_FILES: i64 = 0x8000_0000;
pub const PATH_MAX: usize = 4096;
/// The largest text symbol table read from procfs (a kallsyms with every module loaded is
/// tens of MiB).
const MAX_PROCFS_EXEC: u64 = 1 << 30;

/// What `kvm_open` was asked for, with the default paths already read by the caller.
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    pub execfile: Option<Vec<u8>>,
    pub corefile: Vec<u8>,
    pub swapfile: Option<Vec<u8>>,
    pub flags: i64,
    /// `_PATH_KSYMS`, `_PATH_UNIX`, `_PATH_DEVMEM`.
    pub path_ksyms: Vec<u8>,
    pub path_unix: Vec<u8>,
    pub path_devmem: Vec<u8>,
}

/// The facts `Kvm.info` reports.
#[derive(Debug, Clone)]
pub struct Info {
    pub format: &'static str,
    pub compression: Option<String>,
    pub machine: Option<String>,
    pub osrelease: Option<String>,
    pub build_id: Option<String>,
    pub page_size: Option<u64>,
    pub kernel_offset: u64,
    pub pgtable_levels: Option<u8>,
    pub live: bool,
    pub truncated: bool,
    pub vmcoreinfo: Vec<(String, String)>,
    pub exec_format: Option<&'static str>,
}

pub struct Session {
    exec: Option<Arc<ExecFile>>,
    core: Option<Core>,
    identity: Option<Identity>,
    access: i32,
    /// Kept open for the handle's life: the core as opened with the caller's flags (the
    /// descriptor `kvm_write` uses) and, for live kernels, the swap file.
    _core_file: Option<File>,
    _swap_file: Option<File>,
}

fn display(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn as_path(path: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(path))
}

fn open_with(path: &[u8], access: i32) -> io::Result<File> {
    let mut options = OpenOptions::new();
    match access {
        libc::O_WRONLY => options.write(true),
        libc::O_RDWR => options.read(true).write(true),
        _ => options.read(true),
    };
    // O_NONBLOCK: a FIFO named as a core file must fail the type check, not hang the open.
    options.custom_flags(libc::O_NONBLOCK).open(as_path(path))
}

/// Is this file on procfs (/proc/kcore, /proc/kallsyms)?
fn on_procfs(meta: &fs::Metadata) -> bool {
    fs::metadata("/proc").is_ok_and(|proc_meta| proc_meta.dev() == meta.dev())
}

impl Session {
    /// A handle with no files (KVM_NO_FILES).
    pub fn no_files() -> Session {
        Session { exec: None, core: None, identity: None, access: libc::O_RDONLY, _core_file: None, _swap_file: None }
    }

    /// `kvm_openfiles`: every step of SPEC §2 in order; the first failure ends the open and
    /// drops (closes) every file opened so far.
    pub fn open(req: &OpenRequest) -> Result<Session> {
        if req.flags & KVM_NO_FILES != 0 || req.flags < 0 {
            return Ok(Session::no_files());
        }
        if req.execfile.as_ref().is_some_and(|p| p.len() >= PATH_MAX) {
            return Err(Error::ExecNameTooLong);
        }
        let access = match i32::try_from(req.flags) {
            Ok(f @ (libc::O_RDONLY | libc::O_WRONLY | libc::O_RDWR)) => f,
            _ => return Err(Error::BadFlags),
        };
        let core_name = display(&req.corefile);
        let core_file = open_with(&req.corefile, access).map_err(|e| Error::os(&core_name, &e))?;
        let meta = core_file.metadata().map_err(|e| Error::os(&core_name, &e))?;
        let kind = meta.file_type();
        let origin = if kind.is_char_device() {
            let devmem = fs::metadata(as_path(&req.path_devmem)).ok();
            if !devmem.is_some_and(|d| d.file_type().is_char_device() && d.rdev() == meta.rdev()) {
                return Err(Error::NotMemoryDevice { path: core_name });
            }
            Origin::DevMem
        } else if kind.is_file() {
            if on_procfs(&meta) {
                Origin::Procfs
            } else {
                Origin::Dump
            }
        } else {
            return Err(Error::core(&core_name, crate::errors::CoreFault::NotCore));
        };

        let swap_file = match (&req.swapfile, origin) {
            (Some(swap), Origin::Procfs | Origin::DevMem) => {
                Some(open_with(swap, access).map_err(|e| Error::os(&display(swap), &e))?)
            }
            _ => None,
        };

        let exec = Arc::new(open_exec(req)?);

        // O_WRONLY leaves us unable to read our own core: validation gets its own descriptor.
        let reader = if access == libc::O_WRONLY {
            File::open(as_path(&req.corefile)).map_err(|e| Error::os(&core_name, &e))?
        } else {
            core_file.try_clone().map_err(|e| Error::os(&core_name, &e))?
        };
        let medium: Arc<dyn Medium> = match origin {
            Origin::Dump => Arc::new(MappedFile::new(&reader).map_err(|e| Error::os(&core_name, &e))?),
            Origin::Procfs => Arc::new(PreadFile::new(reader, u64::MAX)),
            Origin::DevMem => Arc::new(PreadFile::new(reader, u64::MAX)),
        };
        let core = formats::open_core(medium, origin).map_err(|fault| Error::core(&core_name, fault))?;
        let identity = identity::check(&exec, &core, &core_name)?;
        Ok(Session {
            exec: Some(exec),
            core: Some(core),
            identity: Some(identity),
            access,
            _core_file: Some(core_file),
            _swap_file: swap_file,
        })
    }

    pub fn exec(&self) -> Option<&ExecFile> {
        self.exec.as_deref()
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
        let Some(exec) = self.exec.as_deref() else {
            return Err(Error::BadNamelist);
        };
        let index = exec.index();
        let data = exec.data();
        let link_time = exec.format.is_link_time();
        Ok(names
            .iter()
            .map(|name| {
                let sym = index
                    .get(data, name)
                    .or_else(|| name.strip_prefix(b"_").and_then(|bare| index.get(data, bare)))?;
                let value = match &self.identity {
                    Some(identity) => identity.relocate(sym.value, link_time),
                    None => sym.value,
                };
                Some((sym.n_type(), value))
            })
            .collect())
    }

    pub fn info(&self) -> Option<Info> {
        let core = self.core.as_ref()?;
        let vmcoreinfo = &core.vmcoreinfo;
        let pgtable_levels = match core.machine.as_deref() {
            Some("x86_64") => vmcoreinfo.number("pgtable_l5_enabled").map(|l5| if l5 != 0 { 5 } else { 4 }),
            _ => None,
        };
        Some(Info {
            format: core.format,
            compression: core.compression.clone(),
            machine: core.machine.clone(),
            osrelease: vmcoreinfo.osrelease().map(str::to_owned).or_else(|| core.header_release.clone()),
            build_id: vmcoreinfo.build_id().map(str::to_owned),
            page_size: core.page_size,
            kernel_offset: self.identity.as_ref().map_or(0, |i| i.kernel_offset),
            pgtable_levels,
            live: core.live,
            truncated: core.truncated,
            vmcoreinfo: vmcoreinfo.entries().to_vec(),
            exec_format: self.exec.as_ref().map(|e| e.format.name()),
        })
    }
}

/// Step 7: the exec file, or `_PATH_KSYMS` if it exists, else `_PATH_UNIX`; validated.
fn open_exec(req: &OpenRequest) -> Result<ExecFile> {
    let (path, blame) = match &req.execfile {
        Some(path) => (path.as_slice(), path.as_slice()),
        None if as_path(&req.path_ksyms).exists() => (req.path_ksyms.as_slice(), req.path_unix.as_slice()),
        None => (req.path_unix.as_slice(), req.path_unix.as_slice()),
    };
    let name = display(path);
    let file = File::open(as_path(path)).map_err(|e| Error::os(&display(blame), &e))?;
    let meta = file.metadata().map_err(|e| Error::os(&name, &e))?;
    if meta.is_dir() {
        return Err(Error::os(&name, &io::Error::from_raw_os_error(libc::EISDIR)));
    }
    let procfs = on_procfs(&meta);
    let bytes = if procfs || !meta.is_file() || meta.len() == 0 {
        ExecBytes::Owned(read_bounded(&file, MAX_PROCFS_EXEC).map_err(|e| Error::os(&name, &e))?)
    } else {
        ExecBytes::Mapped(MappedFile::new(&file).map_err(|e| Error::os(&name, &e))?)
    };
    ExecFile::parse(&name, bytes, procfs).map_err(|fault| Error::Symbols { path: name, fault })
}
