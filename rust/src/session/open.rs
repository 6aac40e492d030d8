//! `kvm_open`'s steps (SPEC §2), in order; the first failure ends the open and drops
//! (closes) every file opened so far. Then the core's VMCOREINFO is settled (given, carried,
//! or found in memory), the exec file is checked against it, and the machine's translator
//! is built.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::{Session, Symbols};
use crate::cancel::{Cancel, NEVER};
use crate::errors::{CoreFault, Error, Result, SymbolFault};
use crate::formats::vmcoreinfo::{VmcoreInfo, MAX_VMCOREINFO};
use crate::formats::{self, Core, Origin, VmcoreinfoSource};
use crate::identity::{self, Identity};
use crate::kernel::kallsyms;
use crate::mapping::{read_bounded, LazyMappedFile, MappedFile, Medium, PreadFile};
use crate::symbols::{cache as exec_cache, ExecBytes, ExecFile};
use crate::translate::KernelLayout;

pub const KVM_NO_FILES: i64 = 0x8000_0000;
pub const PATH_MAX: usize = 4096;
/// The largest text symbol table read from procfs (a kallsyms with every module loaded is
/// tens of MiB).
const MAX_PROCFS_EXEC: u64 = 1 << 30;
/// The kernel's `vmcoreinfo_data` page starts with this line.
const VMCOREINFO_START: &[u8] = b"OSRELEASE=";
/// The step of the VMCOREINFO search: the page is page-aligned for any kernel page size.
const SEARCH_STEP: u64 = 4096;
/// The VMCOREINFO search looks at its cancel flag once per this many pages (64 MiB).
const CANCEL_EVERY: u64 = 16384;

/// What `kvm_open` was asked for, with the default paths already read by the caller.
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    pub execfile: Option<Vec<u8>>,
    /// The core file; more than one: the parts of a split dump.
    pub corefiles: Vec<Vec<u8>>,
    pub swapfile: Option<Vec<u8>>,
    pub flags: i64,
    /// `_PATH_KSYMS`, `_PATH_UNIX`, `_PATH_DEVMEM`.
    pub path_ksyms: Vec<u8>,
    pub path_unix: Vec<u8>,
    pub path_devmem: Vec<u8>,
    /// Take symbols from the dump's own kallsyms tables (`kvm_rs.CORE_SYMBOLS`).
    pub core_symbols: bool,
    /// With `core_symbols`: a dump without kallsyms tables opens with no symbols (scan).
    pub symbols_optional: bool,
    /// VMCOREINFO text that replaces the dump's own.
    pub vmcoreinfo: Option<Vec<u8>>,
}

impl OpenRequest {
    /// The core file's name in messages: the first part's.
    pub fn core_name(&self) -> &[u8] {
        self.corefiles.first().map_or(&[], Vec::as_slice)
    }
}

pub(super) fn as_path(path: &[u8]) -> &Path {
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
    // The device of /proc, asked once per process: procfs is mounted before any dump is.
    static PROC_DEV: OnceLock<Option<u64>> = OnceLock::new();
    let proc_dev = PROC_DEV.get_or_init(|| fs::metadata("/proc").ok().map(|m| m.dev()));
    *proc_dev == Some(meta.dev())
}

/// One core file, opened and typed (steps 4 and 5).
struct OpenedCore {
    file: File,
    meta: fs::Metadata,
    origin: Origin,
}

fn open_core_file(path: &[u8], access: i32, path_devmem: &[u8]) -> Result<OpenedCore> {
    let file = open_with(path, access).map_err(|e| {
        // open(2) refuses a socket (ENXIO) before the type check can name it.
        let socket = fs::metadata(as_path(path)).is_ok_and(|m| m.file_type().is_socket());
        if socket {
            Error::core(path, CoreFault::NotCore)
        } else {
            Error::os(path, &e)
        }
    })?;
    let meta = file.metadata().map_err(|e| Error::os(path, &e))?;
    let kind = meta.file_type();
    let origin = if kind.is_char_device() {
        let devmem = fs::metadata(as_path(path_devmem)).ok();
        if !devmem.is_some_and(|d| d.file_type().is_char_device() && d.rdev() == meta.rdev()) {
            return Err(Error::NotMemoryDevice {
                path: path.to_vec(),
            });
        }
        Origin::DevMem
    } else if kind.is_file() {
        if on_procfs(&meta) {
            Origin::Procfs
        } else {
            Origin::Dump
        }
    } else {
        return Err(Error::core(path, CoreFault::NotCore));
    };
    Ok(OpenedCore { file, meta, origin })
}

/// The bytes of an opened core, for validation: O_WRONLY leaves us unable to read our own
/// core, so validation gets its own descriptor.
fn medium_of(path: &[u8], opened: &OpenedCore, access: i32) -> Result<Arc<dyn Medium>> {
    let reader = if access == libc::O_WRONLY {
        File::open(as_path(path)).map_err(|e| Error::os(path, &e))?
    } else {
        opened.file.try_clone().map_err(|e| Error::os(path, &e))?
    };
    Ok(match opened.origin {
        // A dump opened for writing is read with pread: no mapped slice may alias a page
        // that kvm_write is rewriting.
        Origin::Dump if access == libc::O_RDONLY => {
            Arc::new(LazyMappedFile::new(reader, opened.meta.len()))
        }
        Origin::Dump => Arc::new(PreadFile::new(reader, opened.meta.len())),
        Origin::Procfs | Origin::DevMem => Arc::new(PreadFile::new(reader, u64::MAX)),
    })
}

impl Session {
    /// `kvm_openfiles`: every step of SPEC §2 in order.
    pub fn open(req: &OpenRequest) -> Result<Session> {
        Session::open_with(req, &NEVER)
    }

    /// `open`, stopping with `Error::Interrupted` once `cancel` is set (the one long step
    /// of an open is the search of a dump's memory for VMCOREINFO).
    pub fn open_with(req: &OpenRequest, cancel: &Cancel) -> Result<Session> {
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
        // The environment's settings, before any file is opened.
        crate::cache::setting()?;
        let core_name = req.core_name().to_vec();
        let mut opened = Vec::with_capacity(req.corefiles.len());
        for path in &req.corefiles {
            opened.push((path, open_core_file(path, access, &req.path_devmem)?));
        }
        let live = opened
            .iter()
            .any(|(_, o)| matches!(o.origin, Origin::Procfs | Origin::DevMem));
        let swap_file = match (&req.swapfile, live) {
            (Some(swap), true) => Some(open_with(swap, access).map_err(|e| Error::os(swap, &e))?),
            _ => None,
        };

        let exec = if req.core_symbols {
            None
        } else {
            Some(open_exec(req)?)
        };

        let mut core = match opened.as_slice() {
            [(path, one)] => {
                let medium = medium_of(path, one, access)?;
                formats::open_core(medium, one.origin).map_err(|fault| Error::core(path, fault))?
            }
            parts => {
                let mut media = Vec::with_capacity(parts.len());
                for (path, part) in parts {
                    if part.origin != Origin::Dump {
                        return Err(Error::core(path, CoreFault::NotCore));
                    }
                    media.push(((*path).clone(), medium_of(path, part, access)?));
                }
                formats::open_split(media)?
            }
        };
        settle_vmcoreinfo(&mut core, req.vmcoreinfo.as_deref(), cancel)?;
        if req.core_symbols
            && !req.symbols_optional
            && kallsyms::Tables::from_vmcoreinfo(&core.vmcoreinfo).is_none()
        {
            return Err(Error::NoCoreKallsyms { path: core_name });
        }
        // Only a single core file is patched by kvm_write.
        let core_file = match opened.len() {
            1 => opened.pop().map(|(_, o)| o.file),
            _ => None,
        };
        Session::assemble(
            symbols_of(exec, &core),
            core,
            core_name,
            access,
            core_file,
            swap_file,
        )
    }

    /// A read-only handle over a core already recognised (an in-memory file in the fuzz
    /// targets and tests): steps 8 and 9 only. Without `exec`, the dump's own kallsyms
    /// tables are the symbols where VMCOREINFO names them.
    pub fn from_core(exec: Option<Arc<ExecFile>>, mut core: Core, name: &[u8]) -> Result<Session> {
        settle_vmcoreinfo(&mut core, None, &NEVER)?;
        let symbols = symbols_of(exec, &core);
        Session::assemble(symbols, core, name.to_vec(), libc::O_RDONLY, None, None)
    }

    /// Step 8's identity check, and the handle: symbols, core, translator.
    pub(super) fn assemble(
        symbols: Symbols,
        core: Core,
        core_path: Vec<u8>,
        access: i32,
        core_file: Option<File>,
        swap_file: Option<File>,
    ) -> Result<Session> {
        let (identity, link_time) = match &symbols {
            Symbols::File(exec) => (
                identity::check(exec, &core, &core_path)?,
                exec.format.is_link_time(),
            ),
            _ => (Identity::of_core(&core), false),
        };
        let translator = core.machine_record().and_then(|machine| {
            machine.translator(&KernelLayout {
                vmcoreinfo: &core.vmcoreinfo,
                image: identity.runtime_image(link_time),
                exec_root: identity.root_table(machine, link_time),
                header_phys_base: core.body.header_phys_base(),
                segments: core.body.segments(),
            })
        });
        let thin = identity.thin;
        let session = Session {
            symbols,
            core: Some(core),
            core_path,
            identity: Some(identity),
            translator,
            access,
            core_file,
            _swap_file: swap_file,
            triage: Default::default(),
            stacks: Default::default(),
        };
        if thin {
            session.check_kallsyms_sample()?;
        }
        Ok(session)
    }
}

/// The exec file, else the dump's own kallsyms tables where VMCOREINFO names them.
fn symbols_of(exec: Option<Arc<ExecFile>>, core: &Core) -> Symbols {
    match exec {
        Some(exec) => Symbols::File(exec),
        None if kallsyms::Tables::from_vmcoreinfo(&core.vmcoreinfo).is_some() => {
            Symbols::Core(Box::default())
        }
        None => Symbols::None,
    }
}

/// VMCOREINFO as given, else as the dump carries it, else the kernel's own page found in
/// the dump's memory (QEMU without `-device vmcoreinfo` writes no note).
fn settle_vmcoreinfo(core: &mut Core, given: Option<&[u8]>, cancel: &Cancel) -> Result<()> {
    if let Some(text) = given {
        core.set_vmcoreinfo(VmcoreInfo::parse(text), VmcoreinfoSource::Given);
        return Ok(());
    }
    if core.vmcoreinfo.is_empty() {
        if let Some(found) = search_vmcoreinfo(core, cancel)? {
            core.set_vmcoreinfo(found, VmcoreinfoSource::Memory);
        }
    }
    Ok(())
}

/// The first page-aligned physical page that starts with `OSRELEASE=` and reads as
/// VMCOREINFO. Bounded by the physical memory the dump holds, 16 bytes a page.
fn search_vmcoreinfo(core: &Core, cancel: &Cancel) -> Result<Option<VmcoreInfo>> {
    let mut head = [0u8; 16];
    for (start, end) in core.body.physical_ranges() {
        let mut page = start.div_ceil(SEARCH_STEP).saturating_mul(SEARCH_STEP);
        while page < end {
            if (page / SEARCH_STEP) % CANCEL_EVERY == 0 {
                cancel.check()?;
            }
            if core.read_phys(page, &mut head).is_ok() && head.starts_with(VMCOREINFO_START) {
                // The page is the kernel's page (up to 64 KiB), zeroed after the text.
                let mut text = vec![0u8; MAX_VMCOREINFO.min(64 << 10)];
                let got = match core.read_phys(page, &mut text) {
                    Ok(()) => text.len(),
                    Err((n, _)) => n,
                };
                let info = VmcoreInfo::parse(text.get(..got).unwrap_or(&[]));
                if info.osrelease().is_some() && info.page_size().is_some() {
                    return Ok(Some(info));
                }
            }
            page = page.saturating_add(SEARCH_STEP);
        }
    }
    Ok(None)
}

/// Step 7: the exec file, or `_PATH_KSYMS` if it exists, else `_PATH_UNIX`; validated,
/// or taken from the process's cache of exec files already validated.
fn open_exec(req: &OpenRequest) -> Result<Arc<ExecFile>> {
    let (path, blame) = match &req.execfile {
        Some(path) => (path.as_slice(), path.as_slice()),
        None if as_path(&req.path_ksyms).exists() => {
            (req.path_ksyms.as_slice(), req.path_unix.as_slice())
        }
        None => (req.path_unix.as_slice(), req.path_unix.as_slice()),
    };
    let name = path.to_vec();
    // A stat is enough to find a cached exec file (its key has ctime: a chmod misses).
    if let Ok(meta) = fs::metadata(as_path(path)) {
        if meta.is_file() {
            if let Some(exec) = exec_cache::get(&exec_cache::Key::of(&meta), &name) {
                return Ok(exec);
            }
        }
    }
    let file = open_with(path, libc::O_RDONLY).map_err(|e| Error::os(blame, &e))?;
    let meta = file.metadata().map_err(|e| Error::os(&name, &e))?;
    if meta.is_dir() {
        return Err(Error::os(
            &name,
            &io::Error::from_raw_os_error(libc::EISDIR),
        ));
    }
    let procfs = on_procfs(&meta);
    if !procfs && !meta.is_file() {
        // A FIFO, socket or device holds no symbol table we could validate.
        return Err(Error::Symbols {
            path: name,
            fault: SymbolFault::Unrecognized,
        });
    }
    // procfs files (kallsyms) change under the same inode: never cached.
    let cacheable = !procfs && meta.is_file() && meta.len() > 0;
    let key = exec_cache::Key::of(&meta);
    let bytes = if cacheable {
        ExecBytes::Mapped(MappedFile::map_only(&file).map_err(|e| Error::os(&name, &e))?)
    } else {
        ExecBytes::Owned(read_bounded(&file, MAX_PROCFS_EXEC).map_err(|e| Error::os(&name, &e))?)
    };
    let exec = ExecFile::parse(&name, bytes, procfs)
        .map_err(|fault| Error::Symbols { path: name, fault })?;
    let exec = Arc::new(exec);
    if cacheable {
        exec_cache::put(key, Arc::clone(&exec));
    }
    Ok(exec)
}
