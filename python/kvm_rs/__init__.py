"""kvm_rs: BSD libkvm for Linux kernels and their crash dumps, with a Rust core.

The libkvm calls (`open`, `openfiles`, `close`, `geterr`, `nlist`) return values the C way
and never raise kvm errors; `Kvm` is the handle they return, and also opens directly,
raising `KvmError`.
"""

from __future__ import annotations

from . import paths
from ._handle import CORE_SYMBOLS, Frame, Kvm, KvmInfo, LogRecord
from ._libkvm import (
    N_ABS,
    N_BSS,
    N_DATA,
    N_EXT,
    N_TEXT,
    N_UNDF,
    Nlist,
    close,
    geterr,
    getloadavg,
    getprocs,
    nlist,
    open,
    openfiles,
    read,
    write,
)
from ._native import KVM_NO_FILES, PATH_MAX, clear_build_cache, clear_exec_cache
from ._scan import ScanReport, scan, scan_iter
from ._triage import (
    KERN_PROC_ALL,
    KERN_PROC_KTHREAD,
    KERN_PROC_PID,
    KERN_PROC_UID,
    Module,
    ModuleList,
    Proc,
    ProcList,
    TriageReport,
)
from .errors import KvmError

_POSIX2_LINE_MAX = 2048


def __getattr__(name: str) -> str:
    """`__version__`, from the package metadata on first use (reading it costs a tenth of
    the import: a one-shot CLI call should not pay it)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import metadata

    try:
        return metadata.version("kvm-rs")
    except metadata.PackageNotFoundError:  # imported from a source tree, not installed
        return "0+unknown"


__all__ = [
    "CORE_SYMBOLS",
    "KERN_PROC_ALL",
    "KERN_PROC_KTHREAD",
    "KERN_PROC_PID",
    "KERN_PROC_UID",
    "KVM_NO_FILES",
    "N_ABS",
    "N_BSS",
    "N_DATA",
    "N_EXT",
    "N_TEXT",
    "N_UNDF",
    "PATH_MAX",
    "_POSIX2_LINE_MAX",
    "Frame",
    "Kvm",
    "KvmError",
    "KvmInfo",
    "LogRecord",
    "Module",
    "ModuleList",
    "Nlist",
    "Proc",
    "ProcList",
    "ScanReport",
    "TriageReport",
    "__version__",
    "clear_build_cache",
    "clear_exec_cache",
    "close",
    "geterr",
    "getloadavg",
    "getprocs",
    "nlist",
    "open",
    "openfiles",
    "paths",
    "read",
    "scan",
    "scan_iter",
    "write",
]
