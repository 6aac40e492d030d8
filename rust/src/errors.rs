//! The one error type of the crate. `Display` gives the libkvm message, exactly as the
//! SPEC words it; the Python layer decides whether to print, store or raise it.

use std::fmt;
use std::io::{self, Write};

/// Why a core file was rejected (the part after `<corefile>: `).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreFault {
    Empty,
    NotCore,
    /// A header field holds a value no producer writes.
    Invalid(String),
    /// The file ends inside its own headers.
    Truncated(String),
    UnsupportedCompression(String),
}

impl fmt::Display for CoreFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreFault::Empty => f.write_str("empty file"),
            CoreFault::NotCore => f.write_str("not a kernel core file"),
            CoreFault::Invalid(what) => write!(f, "invalid core: {what}"),
            CoreFault::Truncated(what) => write!(f, "truncated core: {what}"),
            CoreFault::UnsupportedCompression(name) => write!(f, "unsupported compression {name}"),
        }
    }
}

/// Why an exec file (symbol table) was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SymbolFault {
    Empty,
    Unrecognized,
    NoSymbolTable,
    HiddenAddresses,
}

impl fmt::Display for SymbolFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SymbolFault::Empty => "empty file",
            SymbolFault::Unrecognized => "unrecognized symbol table format",
            SymbolFault::NoSymbolTable => "no symbol table",
            SymbolFault::HiddenAddresses => "symbol addresses are hidden (kptr_restrict)",
        })
    }
}

/// Why a read of kernel memory failed (SPEC §13): `KvmError.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No translation: the page tables map nothing there.
    NotMapped,
    /// The dump level filtered the page out.
    Excluded,
    /// Outside every segment or range the dump holds.
    NotInDump,
    /// A page an incomplete dump never wrote.
    Incomplete,
    /// A page another part of a split dump holds.
    OtherPart,
    /// The walk needs a page table the dump lacks.
    PageTableMissing,
    /// Past the end of a cut file.
    Truncated,
}

impl Reason {
    pub fn text(self) -> &'static str {
        match self {
            Reason::NotMapped => "not mapped",
            Reason::Excluded => "excluded",
            Reason::NotInDump => "not in the dump",
            Reason::Incomplete => "not in the dump (incomplete)",
            Reason::OtherPart => "not in this part of a split dump",
            Reason::PageTableMissing => "page table missing",
            Reason::Truncated => "truncated",
        }
    }
}

/// A file name as the caller gave it: bytes, so a name that is not UTF-8 comes back intact.
pub type PathName = Vec<u8>;

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A system call on `path` failed.
    Os {
        path: PathName,
        errno: i32,
    },
    ExecNameTooLong,
    BadFlags,
    NotMemoryDevice {
        path: PathName,
    },
    /// `KVM_RS_PAGE_CACHE` holds `value`, which is not a page count in `0..=max`.
    PageCacheSetting {
        value: String,
        max: usize,
    },
    Core {
        path: PathName,
        fault: CoreFault,
    },
    Symbols {
        path: PathName,
        fault: SymbolFault,
    },
    Mismatch {
        exec: PathName,
        core: PathName,
        field: String,
        exec_value: String,
        core_value: String,
    },
    BadNamelist,
    InvalidAddress {
        addr: u64,
        reason: Reason,
    },
    /// The dump's file ends before `addr`'s bytes.
    ShortRead {
        addr: u64,
    },
    /// `kvm_write` at `addr`, where the file holds no bytes (a cut dump): nothing written.
    ShortWrite {
        addr: u64,
    },
    /// A read needs address translation the machine does not have.
    NoTranslation {
        path: PathName,
        machine: String,
    },
    /// `CORE_SYMBOLS` on a dump whose VMCOREINFO names no kallsyms tables.
    NoCoreKallsyms {
        path: PathName,
    },
    /// A file given as a part of a split dump belongs to another dump.
    NotSameDump {
        part: PathName,
        first: PathName,
        field: String,
    },
    /// `kvm_read`/`kvm_write` on a KVM_NO_FILES handle.
    NoCoreFile {
        op: &'static str,
    },
    /// `kvm_read` on an O_WRONLY handle, `kvm_write` on an O_RDONLY one.
    BadDescriptor {
        op: &'static str,
    },
    WriteCompressed,
    /// A triage call on a dump with no usable BTF (SPEC §14), and no `.BTF` in the exec.
    NoBtf {
        path: PathName,
    },
    /// A triage call that cannot read what it needs: `<path>: <what>` (BTF that does not
    /// parse, a type or symbol the kernel's tables lack).
    Triage {
        path: PathName,
        what: String,
    },
    Closed,
    /// The caller asked the work to stop (a signal arrived).
    Interrupted,
    /// A backtrace cannot start: no crash registers, no unwinder for the machine.
    NoBacktrace {
        path: PathName,
        why: String,
    },
}

impl Error {
    pub fn os(path: &[u8], err: &io::Error) -> Error {
        // Errors raised before any system call (a path with a NUL byte) carry no errno.
        let errno = err.raw_os_error().unwrap_or(match err.kind() {
            io::ErrorKind::InvalidInput => libc::EINVAL,
            _ => libc::EIO,
        });
        Error::Os {
            path: path.to_vec(),
            errno,
        }
    }

    pub fn core(path: &[u8], fault: CoreFault) -> Error {
        Error::Core {
            path: path.to_vec(),
            fault,
        }
    }

    /// Soft errors go to the handle's error text only, never to stderr (Sun convention).
    pub fn is_soft(&self) -> bool {
        matches!(self, Error::BadNamelist | Error::InvalidAddress { .. })
    }

    /// The errno of the failed system call, where there was one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Os { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The file the error is about, where there is one.
    pub fn filename(&self) -> Option<&[u8]> {
        match self {
            Error::Os { path, .. }
            | Error::NotMemoryDevice { path }
            | Error::Core { path, .. }
            | Error::Symbols { path, .. }
            | Error::NoTranslation { path, .. }
            | Error::NoCoreKallsyms { path }
            | Error::NoBtf { path }
            | Error::Triage { path, .. }
            | Error::NoBacktrace { path, .. } => Some(path),
            Error::NotSameDump { part, .. } => Some(part),
            Error::Mismatch { exec, .. } => Some(exec),
            _ => None,
        }
    }

    /// The first address a read could not deliver.
    pub fn address(&self) -> Option<u64> {
        match self {
            Error::InvalidAddress { addr, .. } | Error::ShortRead { addr } => Some(*addr),
            _ => None,
        }
    }

    /// Why a read failed, where it did.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Error::InvalidAddress { reason, .. } => Some(*reason),
            Error::ShortRead { .. } => Some(Reason::Truncated),
            _ => None,
        }
    }
}

/// The C library's text for an errno, without Rust's " (os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

impl Error {
    /// The libkvm message, with file names as the raw bytes the caller gave.
    pub fn message(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut named = |path: &[u8], rest: fmt::Arguments<'_>| {
            out.extend_from_slice(path);
            let _ = out.write_fmt(rest);
        };
        match self {
            Error::Os { path, errno } => named(path, format_args!(": {}", strerror(*errno))),
            Error::NotMemoryDevice { path } => {
                named(path, format_args!(": not physical memory device"))
            }
            Error::PageCacheSetting { value, max } => {
                let _ = write!(
                    out,
                    "KVM_RS_PAGE_CACHE={value}: not a number of pages (0 to {max})"
                );
            }
            Error::Core { path, fault } => named(path, format_args!(": {fault}")),
            Error::Symbols { path, fault } => named(path, format_args!(": {fault}")),
            Error::Mismatch {
                exec,
                core,
                field,
                exec_value,
                core_value,
            } => {
                named(exec, format_args!(": does not match "));
                named(
                    core,
                    format_args!(" ({field}: {exec_value} != {core_value})"),
                );
            }
            Error::ExecNameTooLong => out.extend_from_slice(b"exec file name too long"),
            Error::BadFlags => out.extend_from_slice(b"bad flags arg"),
            Error::BadNamelist => out.extend_from_slice(b"bad namelist"),
            Error::InvalidAddress { addr, .. } => {
                let _ = write!(out, "invalid address ({addr:#x})");
            }
            Error::ShortRead { .. } => out.extend_from_slice(b"short read"),
            Error::ShortWrite { addr } => {
                let _ = write!(
                    out,
                    "kvm_write: short write ({addr:#x} is past the end of the file)"
                );
            }
            Error::NoTranslation { path, machine } => {
                named(path, format_args!(": no address translation for {machine}"))
            }
            Error::NoCoreKallsyms { path } => named(
                path,
                format_args!(
                    ": no kallsyms tables in VMCOREINFO (kernel before 6.0): \
                     give a System.map, vmlinux or kallsyms file"
                ),
            ),
            Error::NotSameDump { part, first, field } => {
                named(part, format_args!(": not part of the same dump as "));
                named(first, format_args!(" ({field})"));
            }
            Error::NoCoreFile { op } => {
                let _ = write!(out, "{op}: no core file (KVM_NO_FILES)");
            }
            Error::BadDescriptor { op } => {
                let _ = write!(out, "{op}: {}", strerror(libc::EBADF));
            }
            Error::WriteCompressed => {
                out.extend_from_slice(b"kvm_write not implemented for compressed dumps")
            }
            Error::NoBtf { path } => named(
                path,
                format_args!(
                    ": no BTF type information in the dump (kernel built without \
                     CONFIG_DEBUG_INFO_BTF): give a vmlinux with a .BTF section"
                ),
            ),
            Error::Triage { path, what } => named(path, format_args!(": {what}")),
            Error::Closed => out.extend_from_slice(b"kvm handle is closed"),
            Error::Interrupted => out.extend_from_slice(b"interrupted"),
            Error::NoBacktrace { path, why } => named(path, format_args!(": no backtrace: {why}")),
        }
        out
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.message()))
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
