//! The one error type of the crate. `Display` gives the libkvm message, exactly as the
//! SPEC words it; the Python layer decides whether to print, store or raise it.

use std::fmt;
use std::io;

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

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A system call on `path` failed.
    Os {
        path: String,
        errno: i32,
    },
    ExecNameTooLong,
    BadFlags,
    NotMemoryDevice {
        path: String,
    },
    Core {
        path: String,
        fault: CoreFault,
    },
    Symbols {
        path: String,
        fault: SymbolFault,
    },
    Mismatch {
        exec: String,
        core: String,
        field: String,
        exec_value: String,
        core_value: String,
    },
    BadNamelist,
    InvalidAddress(u64),
    ShortRead,
    /// `kvm_read`/`kvm_write` on a KVM_NO_FILES handle.
    NoCoreFile {
        op: &'static str,
    },
    /// `kvm_read` on an O_WRONLY handle, `kvm_write` on an O_RDONLY one.
    BadDescriptor {
        op: &'static str,
    },
    WriteCompressed,
    Closed,
}

impl Error {
    pub fn os(path: &str, err: &io::Error) -> Error {
        Error::Os {
            path: path.to_owned(),
            errno: err.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    pub fn core(path: &str, fault: CoreFault) -> Error {
        Error::Core {
            path: path.to_owned(),
            fault,
        }
    }

    /// Soft errors go to the handle's error text only, never to stderr (Sun convention).
    pub fn is_soft(&self) -> bool {
        matches!(self, Error::BadNamelist | Error::InvalidAddress(_))
    }

    /// The errno of the failed system call, where there was one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Os { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The file the error is about, where there is one.
    pub fn filename(&self) -> Option<&str> {
        match self {
            Error::Os { path, .. }
            | Error::NotMemoryDevice { path }
            | Error::Core { path, .. }
            | Error::Symbols { path, .. } => Some(path),
            Error::Mismatch { exec, .. } => Some(exec),
            _ => None,
        }
    }

    pub fn address(&self) -> Option<u64> {
        match self {
            Error::InvalidAddress(addr) => Some(*addr),
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os { path, errno } => write!(f, "{path}: {}", strerror(*errno)),
            Error::ExecNameTooLong => f.write_str("exec file name too long"),
            Error::BadFlags => f.write_str("bad flags arg"),
            Error::NotMemoryDevice { path } => write!(f, "{path}: not physical memory device"),
            Error::Core { path, fault } => write!(f, "{path}: {fault}"),
            Error::Symbols { path, fault } => write!(f, "{path}: {fault}"),
            Error::Mismatch {
                exec,
                core,
                field,
                exec_value,
                core_value,
            } => {
                write!(
                    f,
                    "{exec}: does not match {core} ({field}: {exec_value} != {core_value})"
                )
            }
            Error::BadNamelist => f.write_str("bad namelist"),
            Error::InvalidAddress(addr) => write!(f, "invalid address ({addr:#x})"),
            Error::ShortRead => f.write_str("short read"),
            Error::NoCoreFile { op } => write!(f, "{op}: no core file (KVM_NO_FILES)"),
            Error::BadDescriptor { op } => write!(f, "{op}: {}", strerror(libc::EBADF)),
            Error::WriteCompressed => f.write_str("kvm_write not implemented for compressed dumps"),
            Error::Closed => f.write_str("kvm handle is closed"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
