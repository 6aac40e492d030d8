//! The kvm handle: an exec file, a core file and what open learned about them. No PyO3 here;
//! a `Session` is `Send + Sync` and is shared by every thread that reads through a handle.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::errors::{CoreFault, Error, Result, SymbolFault};
use crate::formats::segments::Piece;
use crate::formats::{self, copy_from_piece, Core, Gap, Layout, Origin};
use crate::identity::{self, Identity};
use crate::mapping::{read_bounded, MappedFile, Medium, PreadFile};
use crate::symbols::{cache as exec_cache, core_kallsyms, ExecBytes, ExecFile};
use crate::translate::x86_64::{self as x86, X86_64};
use crate::translate::Fault;

pub const KVM_NO_FILES: i64 = 0x8000_0000;
pub const PATH_MAX: usize = 4096;
/// The largest text symbol table read from procfs (a kallsyms with every module loaded is
/// tens of MiB).
const MAX_PROCFS_EXEC: u64 = 1 << 30;
/// `read` fills its result this much at a time.
const READ_BLOCK: usize = 1 << 20;
/// How many of the dump's kallsyms entries a thin exec file is compared with.
const KALLSYMS_SAMPLE: usize = 4096;

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
    /// Take symbols from the dump's own kallsyms tables (`kvm_rs.CORE_SYMBOLS`).
    pub core_symbols: bool,
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

/// Facts of a dump beyond `Info` that a triage pipeline sorts by.
#[derive(Debug, Clone)]
pub struct DumpFacts {
    /// VMCOREINFO `CRASHTIME` (seconds since the epoch).
    pub crash_time: Option<u64>,
    /// makedumpfile's `-d` level.
    pub dump_level: Option<u32>,
    /// makedumpfile marked the dump incomplete (it ran out of space).
    pub incomplete: bool,
    pub dumped_pages: Option<u64>,
}

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
    translator: Option<X86_64>,
    access: i32,
    /// The core as opened with the caller's flags: the descriptor `kvm_write` uses.
    core_file: Option<File>,
    /// The swap file of a live kernel, held open for the handle's life (libkvm accepts it
    /// for compatibility; nothing reads it).
    _swap_file: Option<File>,
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
    // The device of /proc, asked once per process: procfs is mounted before any dump is.
    static PROC_DEV: OnceLock<Option<u64>> = OnceLock::new();
    let proc_dev = PROC_DEV.get_or_init(|| fs::metadata("/proc").ok().map(|m| m.dev()));
    *proc_dev == Some(meta.dev())
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
        }
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
        let core_name = req.corefile.clone();
        let core_file = open_with(&req.corefile, access).map_err(|e| {
            // open(2) refuses a socket (ENXIO) before the type check can name it.
            let socket =
                fs::metadata(as_path(&req.corefile)).is_ok_and(|m| m.file_type().is_socket());
            if socket {
                Error::core(&core_name, CoreFault::NotCore)
            } else {
                Error::os(&core_name, &e)
            }
        })?;
        let meta = core_file
            .metadata()
            .map_err(|e| Error::os(&core_name, &e))?;
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
                Some(open_with(swap, access).map_err(|e| Error::os(swap, &e))?)
            }
            _ => None,
        };

        let exec = if req.core_symbols {
            None
        } else {
            Some(open_exec(req)?)
        };

        // O_WRONLY leaves us unable to read our own core: validation gets its own descriptor.
        let reader = if access == libc::O_WRONLY {
            File::open(as_path(&req.corefile)).map_err(|e| Error::os(&core_name, &e))?
        } else {
            core_file
                .try_clone()
                .map_err(|e| Error::os(&core_name, &e))?
        };
        let medium: Arc<dyn Medium> = match origin {
            Origin::Dump => Arc::new(
                MappedFile::with_file(reader, meta.len()).map_err(|e| Error::os(&core_name, &e))?,
            ),
            Origin::Procfs => Arc::new(PreadFile::new(reader, u64::MAX)),
            Origin::DevMem => Arc::new(PreadFile::new(reader, u64::MAX)),
        };
        let core =
            formats::open_core(medium, origin).map_err(|fault| Error::core(&core_name, fault))?;
        Session::assemble(exec, core, core_name, access, Some(core_file), swap_file)
    }

    /// Step 8's identity check, and the handle: symbols, core, translator.
    fn assemble(
        exec: Option<Arc<ExecFile>>,
        core: Core,
        core_path: Vec<u8>,
        access: i32,
        core_file: Option<File>,
        swap_file: Option<File>,
    ) -> Result<Session> {
        let (symbols, identity, link_time) = match exec {
            Some(exec) => {
                let identity = identity::check(&exec, &core, &core_path)?;
                let link_time = exec.format.is_link_time();
                (Symbols::File(exec), identity, link_time)
            }
            None => (
                Symbols::Core(Box::default()),
                Identity::of_core(&core),
                false,
            ),
        };
        let translator = x86_64_translator(&core, &identity, link_time);
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
        };
        if thin {
            session.check_kallsyms_sample()?;
        }
        Ok(session)
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
    fn core_symbols(&self, limit: Option<usize>) -> Option<Result<Vec<core_kallsyms::CoreSymbol>>> {
        let core = self.core.as_ref()?;
        let tables = core_kallsyms::Tables::from_vmcoreinfo(&core.vmcoreinfo)?;
        let read = |addr: u64, len: usize| self.read_for_decoder(addr, len);
        Some(core_kallsyms::decode(&read, &tables, limit).map_err(|e| self.name_decoder_error(e)))
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
        let Some(sample) = self.core_symbols(Some(KALLSYMS_SAMPLE)) else {
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
    pub fn dmesg(&self) -> Result<Vec<crate::dmesg::Record>> {
        let core = self.readable_core("kvm_read")?;
        let read = |addr: u64, len: usize| match self.read(addr, len) {
            (data, None) => Ok(data),
            (_, Some(error)) => Err(error),
        };
        crate::dmesg::records(&read, &core.vmcoreinfo).map_err(|e| self.name_decoder_error(e))
    }

    /// The symbol table: the exec file, or the dump's kallsyms decoded on first use.
    fn exec_file(&self) -> Result<&ExecFile> {
        match &self.symbols {
            Symbols::None => Err(Error::BadNamelist),
            Symbols::File(exec) => Ok(exec),
            Symbols::Core(cell) => cell
                .get_or_init(|| {
                    let decoded = self.core_symbols(None).unwrap_or(Err(Error::BadNamelist))?;
                    let text = core_kallsyms::to_text(&decoded);
                    ExecFile::parse(&self.core_path, ExecBytes::Owned(text), true).map_err(
                        |fault| Error::Symbols {
                            path: self.core_path.clone(),
                            fault,
                        },
                    )
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

    pub fn dump_facts(&self) -> Option<DumpFacts> {
        let core = self.core.as_ref()?;
        let crash_time = core
            .vmcoreinfo
            .get("CRASHTIME")
            .and_then(|v| v.parse().ok());
        Some(match &core.layout {
            Layout::Kdump(dump) => DumpFacts {
                crash_time,
                dump_level: dump.dump_level,
                incomplete: dump.status & formats::kdump::DUMP_DH_COMPRESSED_INCOMPLETE != 0,
                dumped_pages: Some(dump.dumped_pages),
            },
            Layout::Elf(elf) => DumpFacts {
                crash_time,
                dump_level: None,
                incomplete: false,
                dumped_pages: Some(
                    elf.by_paddr()
                        .pieces()
                        .iter()
                        .map(|p| p.file_len)
                        .sum::<u64>()
                        / core.page_size.unwrap_or(4096).max(1),
                ),
            },
            Layout::DevMem => DumpFacts {
                crash_time,
                dump_level: None,
                incomplete: false,
                dumped_pages: None,
            },
        })
    }

    pub fn info(&self) -> Option<Info> {
        let core = self.core.as_ref()?;
        let vmcoreinfo = &core.vmcoreinfo;
        let pgtable_levels = match core.machine.as_deref() {
            Some("x86_64") => {
                vmcoreinfo
                    .number("pgtable_l5_enabled")
                    .map(|l5| if l5 != 0 { 5 } else { 4 })
            }
            _ => None,
        };
        Some(Info {
            format: core.format,
            compression: core.compression.clone(),
            machine: core.machine.clone(),
            osrelease: vmcoreinfo
                .osrelease()
                .map(str::to_owned)
                .or_else(|| core.header_release.clone()),
            build_id: vmcoreinfo.build_id().map(str::to_owned),
            page_size: core.page_size,
            kernel_offset: self.identity.as_ref().map_or(0, |i| i.kernel_offset),
            pgtable_levels,
            live: core.live,
            truncated: core.truncated,
            vmcoreinfo: vmcoreinfo
                .entries()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            exec_format: match &self.symbols {
                Symbols::None => None,
                Symbols::File(exec) => Some(exec.format.name()),
                Symbols::Core(_) => Some("kallsyms"),
            },
        })
    }
}

/// Where the bytes of a kernel virtual address are.
enum Place<'a> {
    /// A PT_LOAD that maps the virtual address itself.
    Segment(&'a Piece),
    Phys(u64),
}

fn phys_base(core: &Core) -> u64 {
    if let Some(base) = core.vmcoreinfo.number("phys_base") {
        return base as u64;
    }
    match &core.layout {
        Layout::Kdump(dump) => dump.phys_base.unwrap_or(0),
        // The segment holding the kernel text: p_paddr = va - __START_KERNEL_map + phys_base.
        Layout::Elf(elf) => elf
            .loads
            .iter()
            .find(|s| s.vaddr >= x86::START_KERNEL_MAP && s.vaddr != s.paddr)
            .map_or(0, |s| {
                s.paddr
                    .wrapping_sub(s.vaddr.wrapping_sub(x86::START_KERNEL_MAP))
            }),
        Layout::DevMem => 0,
    }
}

/// The translator of an x86_64 core: image range from the exec file's `_text`/`_end`
/// (relocated), page tables from VMCOREINFO's `init_top_pgt` or the exec file's.
fn x86_64_translator(core: &Core, identity: &Identity, link_time: bool) -> Option<X86_64> {
    if core.machine.as_deref() != Some("x86_64") {
        return None;
    }
    let info = &core.vmcoreinfo;
    let top_table = info
        .symbol("init_top_pgt")
        .or_else(|| info.symbol("swapper_pg_dir"))
        .or_else(|| {
            identity
                .symbols
                .get("init_top_pgt")
                .map(|s| identity.relocate(s.value, link_time))
        });
    let image = match identity.image_range() {
        Some((lo, hi)) => identity.relocate(lo, link_time)..identity.relocate(hi, link_time),
        None if top_table.is_none() => {
            let size = info
                .number("KERNEL_IMAGE_SIZE")
                .map_or(x86::DEFAULT_IMAGE_SIZE, |n| n as u64);
            x86::START_KERNEL_MAP..x86::START_KERNEL_MAP.saturating_add(size)
        }
        None => 0..0,
    };
    let levels = if info.number("pgtable_l5_enabled").unwrap_or(0) != 0 {
        5
    } else {
        4
    };
    let sme_mask = info.number("sme_mask").unwrap_or(0) as u64;
    Some(X86_64::new(
        phys_base(core),
        image,
        top_table,
        levels,
        sme_mask,
    ))
}

impl Session {
    fn gap_error(&self, gap: Gap, addr: u64) -> Error {
        match gap {
            Gap::Missing => Error::InvalidAddress(addr),
            Gap::Truncated => Error::ShortRead,
            Gap::Corrupt(what) => Error::core(&self.core_path, CoreFault::Invalid(what)),
        }
    }

    fn resolve<'a>(&self, core: &'a Core, va: u64) -> Result<Place<'a>> {
        if let Layout::Elf(elf) = &core.layout {
            if let Some(piece) = elf.by_vaddr().find(va) {
                return Ok(Place::Segment(piece));
            }
        }
        let Some(translator) = &self.translator else {
            return Err(Error::InvalidAddress(va));
        };
        let read_entry = |pa: u64| -> std::result::Result<u64, Gap> {
            let mut raw = [0u8; 8];
            core.read_phys(pa, &mut raw).map_err(|(_, gap)| gap)?;
            Ok(u64::from_le_bytes(raw))
        };
        match translator.translate(va, &read_entry) {
            Ok(pa) => Ok(Place::Phys(pa)),
            Err(Fault::NotMapped | Fault::Table(Gap::Missing)) => Err(Error::InvalidAddress(va)),
            Err(Fault::Table(gap)) => Err(self.gap_error(gap, va)),
        }
    }

    fn readable_core(&self, op: &'static str) -> Result<&Core> {
        let core = self.core.as_ref().ok_or(Error::NoCoreFile { op })?;
        if op == "kvm_read" && self.access == libc::O_WRONLY {
            return Err(Error::BadDescriptor { op });
        }
        Ok(core)
    }

    /// `kvm_read`: up to `len` bytes of kernel virtual memory at `addr`. Returns the bytes
    /// copied and, when it stopped early, why (libkvm counts an invalid address after some
    /// bytes as a failure of the whole read; a truncated dump as a short read).
    pub fn read(&self, addr: u64, len: usize) -> (Vec<u8>, Option<Error>) {
        // Grown a block at a time: an absurd length fails at its first bad page, not at
        // malloc.
        let mut out: Vec<u8> = Vec::new();
        while out.len() < len {
            let start = out.len();
            let block = (len - start).min(READ_BLOCK);
            out.resize(start + block, 0);
            let (copied, error) = self.read_into(
                addr.wrapping_add(start as u64),
                out.get_mut(start..).unwrap_or(&mut []),
            );
            out.truncate(start + copied);
            if error.is_some() {
                return (out, error);
            }
        }
        (out, None)
    }

    /// `kvm_read` into `buf`: the bytes copied, and why it stopped early if it did.
    pub fn read_into(&self, addr: u64, buf: &mut [u8]) -> (usize, Option<Error>) {
        let core = match self.readable_core("kvm_read") {
            Ok(core) => core,
            Err(e) => return (0, Some(e)),
        };
        let mut done = 0usize;
        while done < buf.len() {
            let Some(va) = addr.checked_add(done as u64) else {
                return (done, Some(Error::InvalidAddress(addr)));
            };
            let chunk = (4096 - (va % 4096) as usize).min(buf.len() - done);
            let dst = buf.get_mut(done..done + chunk).unwrap_or(&mut []);
            let copied = match self.resolve(core, va) {
                Ok(Place::Segment(piece)) => copy_from_piece(core.medium.as_ref(), piece, va, dst),
                Ok(Place::Phys(pa)) => core.read_phys(pa, dst).map(|()| dst.len()),
                Err(e) => return (done, Some(e)),
            };
            match copied {
                Ok(n) => done += n,
                Err((partial, gap)) => {
                    let failed_at = va + partial as u64;
                    return (done + partial, Some(self.gap_error(gap, failed_at)));
                }
            }
        }
        (done, None)
    }

    /// `kvm_write`: patches the core file where it holds `addr` uncompressed.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<usize> {
        let core = self.readable_core("kvm_write")?;
        if self.access == libc::O_RDONLY {
            return Err(Error::BadDescriptor { op: "kvm_write" });
        }
        let compressed = match &core.layout {
            Layout::Kdump(_) => core.compression.is_some() || core.format == "flattened",
            _ => core.format == "flattened",
        };
        if compressed {
            return Err(Error::WriteCompressed);
        }
        let Some(file) = self.core_file.as_ref() else {
            return Err(Error::BadDescriptor { op: "kvm_write" });
        };
        // Locate every page first, so a bad address writes nothing.
        let mut targets = Vec::new();
        let mut done = 0usize;
        while done < data.len() {
            let va = addr
                .checked_add(done as u64)
                .ok_or(Error::InvalidAddress(addr))?;
            let chunk = (4096 - (va % 4096) as usize).min(data.len() - done);
            let (offset, n) = self.file_offset(core, va, chunk)?;
            targets.push((offset, done, n));
            done += n;
        }
        use std::os::unix::fs::FileExt;
        for (offset, from, n) in targets {
            let bytes = data.get(from..from + n).unwrap_or(&[]);
            file.write_all_at(bytes, offset)
                .map_err(|e| Error::os(&self.core_path, &e))?;
        }
        if let Layout::Kdump(dump) = &core.layout {
            dump.forget_cached();
        }
        Ok(data.len())
    }

    /// The file offset holding `va`, and how many of `want` bytes lie there contiguously.
    fn file_offset(&self, core: &Core, va: u64, want: usize) -> Result<(u64, usize)> {
        let in_piece = |piece: &Piece, at: u64| -> Result<(u64, usize)> {
            let within = at - piece.start;
            let n = piece.file_len.saturating_sub(within).min(want as u64) as usize;
            if n == 0 {
                return Err(Error::InvalidAddress(va));
            }
            Ok((piece.offset + within, n))
        };
        match (self.resolve(core, va)?, &core.layout) {
            (Place::Segment(piece), _) => in_piece(piece, va),
            (Place::Phys(pa), Layout::Elf(elf)) => in_piece(
                elf.by_paddr().find(pa).ok_or(Error::InvalidAddress(va))?,
                pa,
            ),
            (Place::Phys(pa), Layout::Kdump(dump)) => {
                let page = dump
                    .raw_page_offset(core.medium.as_ref(), pa / dump.block_size)
                    .map_err(|gap| self.gap_error(gap, va))?;
                let within = pa % dump.block_size;
                Ok((page + within, want.min((dump.block_size - within) as usize)))
            }
            (Place::Phys(pa), Layout::DevMem) => Ok((pa, want)),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
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
            None,
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
        assert_eq!(error, Some(Error::InvalidAddress(DIRECT_MAP + 0x2000)));
        assert_eq!(
            session.info().unwrap().osrelease.as_deref(),
            Some("6.1.0-test")
        );
        std::fs::remove_file(&path).unwrap();
    }
}
