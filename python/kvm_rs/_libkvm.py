"""The C-style libkvm calls: return values and error texts, never a raised kvm error."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from . import _conventions
from ._handle import (
    CorePaths,
    Kvm,
    StrPath,
    VmcoreinfoText,
    _bytes_of,
    _check_names,
    _CoreSymbols,
    _integer,
    _open_native,
)
from ._triage import KERN_PROC_ALL, Proc, select
from .errors import KvmError

N_UNDF = 0x00
N_EXT = 0x01
N_ABS = 0x02
N_TEXT = 0x04
N_DATA = 0x06
N_BSS = 0x08


class Nlist:
    """One `struct nlist` entry: `n_name` in, `n_type` and `n_value` out."""

    __slots__ = ("n_name", "n_type", "n_value")

    def __init__(self, n_name: str | bytes | None = None, n_type: int = 0, n_value: int = 0):
        self.n_name = n_name
        self.n_type = n_type
        self.n_value = n_value

    def __repr__(self) -> str:
        return f"Nlist({self.n_name!r}, n_type={self.n_type:#x}, n_value={self.n_value:#x})"


def open(
    execfile: StrPath | _CoreSymbols | None = None,
    corefile: CorePaths | None = None,
    swapfile: StrPath | None = None,
    flags: int = os.O_RDONLY,
    errstr: str | None = None,
    *,
    vmcoreinfo: VmcoreinfoText | None = None,
) -> Kvm | None:
    """kvm_open(3), the Sun convention: with `errstr`, hard errors go to stderr."""
    try:
        native = _open_native(execfile, corefile, swapfile, flags, vmcoreinfo)
    except KvmError as error:
        _conventions.sun_report(errstr, error.message)
        return None
    return Kvm._wrap(native, errstr)


def openfiles(
    execfile: StrPath | _CoreSymbols | None = None,
    corefile: CorePaths | None = None,
    swapfile: StrPath | None = None,
    flags: int = os.O_RDONLY,
    errbuf: Any = None,
    *,
    vmcoreinfo: VmcoreinfoText | None = None,
) -> Kvm | None:
    """kvm_openfiles(3), the BSD convention: a failed open's message goes into `errbuf`."""
    if errbuf is not None:
        _conventions.check_errbuf(errbuf)
    try:
        native = _open_native(execfile, corefile, swapfile, flags, vmcoreinfo)
    except KvmError as error:
        _conventions.bsd_fill_errbuf(errbuf, error.message)
        return None
    return Kvm._wrap(native, None)


def close(kd: Kvm | None) -> int:
    """kvm_close(3): 0, or -1 for None, a closed handle, or a failed release. Never raises."""
    if not isinstance(kd, Kvm):
        return -1
    try:
        return kd._close_status()
    except Exception:
        return -1


def geterr(kd: Kvm | None) -> str:
    """kvm_geterr(3): the handle's last error text; "" for None."""
    return kd.geterr() if isinstance(kd, Kvm) else ""


def nlist(kd: Kvm, nl: Sequence[Nlist]) -> int:
    """kvm_nlist(3): fills each entry up to the first with no name; returns how many of
    those were not found, or -1 (`bad namelist`) when the handle has no symbol table.
    `nl` is a sequence of Nlist: a str, or an entry without `n_name`, is a TypeError."""
    _check_names(nl, "nl", "kvm_rs.Nlist({!r})")
    entries: list[Nlist] = []
    for entry in nl:
        if not hasattr(entry, "n_name"):
            raise TypeError(f"nl must hold Nlist entries, not {type(entry).__name__}")
        if not entry.n_name:
            break
        entries.append(entry)
    for entry in entries:
        entry.n_type = 0
        entry.n_value = 0
    names = [os.fsencode(e.n_name) for e in entries if e.n_name is not None]
    try:
        found = kd._nlist_raw(names)
    except KvmError:
        return -1
    missing = 0
    for entry, hit in zip(entries, found, strict=False):
        if hit is None:
            missing += 1
        else:
            entry.n_type, entry.n_value = hit
    return missing


def read(kd: Kvm, addr: int, buf: Any) -> int:
    """kvm_read(3): fills `buf` (a writable buffer) from kernel virtual address `addr`.
    Returns the bytes copied, or -1 (an address the dump does not hold, even after some
    bytes were copied); a truncated dump gives the bytes before its end and `short read`.
    An address outside the 64-bit space: -1, and the error text says so."""
    view = memoryview(buf).cast("B")
    if view.readonly:
        raise TypeError("buf must be a writable buffer")
    address = kd._c_address("kvm_read", addr)
    if address is None:
        return -1
    try:
        data, error = kd._read_raw(address, len(view))
    except KvmError:
        return -1
    view[: len(data)] = data
    if error is not None and (error.message != "short read" or not data):
        return -1
    return len(data)


def write(kd: Kvm, addr: int, data: Any) -> int:
    """kvm_write(3): writes `data` (bytes-like; TypeError otherwise) at `addr` into the core
    file; bytes written, or -1 (an address outside the 64-bit space included)."""
    payload = _bytes_of(data)
    address = kd._c_address("kvm_write", addr)
    if address is None:
        return -1
    try:
        return kd.write(address, payload)
    except KvmError:
        return -1


def getprocs(kd: Kvm, op: int = KERN_PROC_ALL, arg: int = 0) -> list[Proc] | None:
    """kvm_getprocs(3): the tasks `op` selects (KERN_PROC_ALL: every task; KERN_PROC_PID:
    pid `arg`; KERN_PROC_UID: uid `arg`; KERN_PROC_KTHREAD: the kernel threads), or None
    with the error in `geterr(kd)` (no BTF, an unknown op, a closed handle)."""
    try:
        procs = kd.tasks()
    except KvmError:
        return None
    selected = select(procs, op, arg)
    if selected is None:
        kd._record(KvmError(f"kvm_getprocs: invalid op {op}"))
    return selected


def getloadavg(kd: Kvm, nelem: int = 3) -> list[float] | None:
    """kvm_getloadavg(3): the first `min(nelem, 3)` of the 1, 5 and 15-minute load averages
    as /proc/loadavg prints them. C fills `loadavg[]` and returns the count; here the list's
    length is that count. None, with the error in `geterr(kd)`, where C returns -1: no
    symbol `avenrun`, its page not in the dump, a closed handle, or a negative `nelem`."""
    count = _integer(nelem, "nelem")
    if count < 0:
        kd._record(KvmError(f"kvm_getloadavg: invalid nelem {count}"))
        return None
    try:
        averages = kd.loadavg()
    except KvmError:
        return None
    return list(averages[:count])
