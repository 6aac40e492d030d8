"""Kvm, the handle: returned by `open`/`openfiles`, and a raising constructor of its own."""

from __future__ import annotations

import dataclasses
import operator
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar, cast

from . import _conventions, _native, paths
from ._signature import signature
from ._triage import (
    ModuleList,
    ProcList,
    TriageReport,
    load_averages,
    module_list,
    proc_list,
    triage_report,
)
from .errors import KvmError

StrPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]
#: A core file, or the parts of one split dump (`makedumpfile --split`), in any order.
CorePaths = StrPath | Sequence[StrPath]
#: VMCOREINFO text (`KEY=VALUE` lines) that replaces the dump's own.
VmcoreinfoText = str | bytes

_T = TypeVar("_T")

#: Kernel addresses are unsigned 64-bit: 0 <= addr < 2**64.
_ADDRESS_SPACE = 1 << 64


@dataclass(frozen=True)
class KvmInfo:
    """Facts about the core and exec files, read without touching kernel memory."""

    format: str
    compression: str | None
    machine: str | None
    osrelease: str | None
    build_id: str | None
    page_size: int | None
    kernel_offset: int
    pgtable_levels: int | None
    live: bool
    truncated: bool
    incomplete: bool
    vmcoreinfo: dict[str, str]
    vmcoreinfo_source: str | None
    exec_format: str | None
    pfn_range: tuple[int, int] | None
    parts: int

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class LogRecord(NamedTuple):
    """One record of the kernel log: its sequence number, its time since boot in
    nanoseconds, its level (0 emerg .. 7 debug), who logged it (`T<pid>` or `C<cpu>`, None
    where the ring does not say) and its text (lines joined by newlines)."""

    seq: int
    ts_nsec: int
    level: int
    caller: str | None
    text: str

    def lines(self) -> Iterator[str]:
        """As the console prints it: `[    5.123456] text`, one line per line of text."""
        return console_lines(self.ts_nsec // 1000, self.text)


class Frame(NamedTuple):
    """One frame of a backtrace, innermost first: its pc, the function (the nearest text
    symbol at or below the pc, or pc - 1 for a return address; None where no symbol
    precedes it), the pc's offset into it, the module (None: the kernel image) and whether
    the machine's unwinding data found it (False: a guess from a stack scan or a register,
    or a frame after which the chain broke)."""

    pc: int
    symbol: str | None
    offset: int | None
    module: str | None
    reliable: bool


def console_lines(ts_usec: int, text: str) -> Iterator[str]:
    """A record's text as the console prints it, its time (µs since boot) on every line."""
    seconds, micros = divmod(ts_usec, 1_000_000)
    return (f"[{seconds:5}.{micros:06}] {line}" for line in text.split("\n"))


def _fspath(value: StrPath | None, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}")
    return os.fsencode(value)


def _part_path(part: StrPath) -> bytes:
    """One part of a split dump: None is a wrong type here, not an empty name."""
    path = _fspath(part, "corefile part")
    if path is None:
        raise TypeError("corefile part must be str, bytes or os.PathLike, not NoneType")
    return path


def _core_paths(value: CorePaths | None) -> list[bytes]:
    """One core file, or a sequence of split parts; the default core file for None."""
    if value is None:
        return [os.fsencode(paths._PATH_MEM)]
    if isinstance(value, (str, bytes, os.PathLike)):
        return [os.fsencode(value)]
    if isinstance(value, Sequence):
        # bytes is a Sequence too, of ints: it was taken above.
        sequence = cast("Sequence[StrPath]", value)
        parts = [_part_path(part) for part in sequence]
        if not parts:
            raise ValueError("corefile: an empty sequence of parts")
        return parts
    raise TypeError(
        "corefile must be str, bytes, os.PathLike or a sequence of them, "
        f"not {type(value).__name__}"
    )


def _vmcoreinfo(value: VmcoreinfoText | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"vmcoreinfo must be str or bytes, not {type(value).__name__}")


def _defaults() -> dict[str, bytes]:
    """The default paths, read now so callers (and tests) may reassign them."""
    return {
        "path_ksyms": os.fsencode(paths._PATH_KSYMS),
        "path_unix": os.fsencode(paths._PATH_UNIX),
        "path_devmem": os.fsencode(paths._PATH_DEVMEM),
    }


def _native_flags(flags: int) -> int:
    """Flags as the native layer takes them (a 64-bit int), keeping what the checks see."""
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise TypeError(f"flags must be int, not {type(flags).__name__}")
    if -(2**63) <= flags < 2**63:
        return flags
    # Too wide for the native call: a negative int has the KVM_NO_FILES bit (two's
    # complement), a positive one keeps its own; any other value is a bad flags arg.
    if flags < 0 or flags & _native.KVM_NO_FILES:
        return _native.KVM_NO_FILES
    return 0x7FFF_FFFF


def _integer(value: Any, name: str) -> int:
    """`value` as an int (anything with __index__); anything else is a TypeError."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be int, not {type(value).__name__}") from None


def _outside_address_space(op: str, addr: int, what: str = "address") -> str | None:
    """Why `addr` is no 64-bit address (the message), or None when it is one."""
    if 0 <= addr < _ADDRESS_SPACE:
        return None
    return f"{op}: {what} {addr:#x} is outside the 64-bit address space"


def _check_read_args(op: str, what: str, addr: Any, size: Any) -> None:
    """The Pythonic layer's checks of a read's arguments: TypeError for a value that is no
    integer, ValueError for an address outside the 64-bit space or an impossible size."""
    message = _outside_address_space(op, _integer(addr, "addr"), what)
    if message is not None:
        raise ValueError(message)
    length = _integer(size, "size")
    if length < 0:
        raise ValueError(f"{op}: size {length} is negative")
    if length >= _ADDRESS_SPACE:
        raise ValueError(f"{op}: size {length} is too large (at most 2**64 - 1 bytes)")


def _bytes_of(data: Any) -> bytes:
    """A copy of a bytes-like object; anything else (an int, a str, a list) is a TypeError."""
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"data must be a bytes-like object (bytes, bytearray, memoryview), "
            f"not {type(data).__name__}"
        ) from None
    return view.tobytes()


def _check_names(names: object, what: str, entry: str = "{!r}") -> None:
    """A str or bytes where a sequence of names belongs is a TypeError, not one name per
    character; `entry` shows how to wrap one name."""
    if isinstance(names, (str, bytes, bytearray)):
        one = entry.format(names)
        raise TypeError(
            f"{what} must be a sequence, not {type(names).__name__} (for one name, pass [{one}])"
        )


class _CoreSymbols:
    """The type of `CORE_SYMBOLS`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "kvm_rs.CORE_SYMBOLS"


CORE_SYMBOLS = _CoreSymbols()
"""An execfile that means: take the symbols from the dump's own kallsyms tables."""


def _open_native(
    execfile: StrPath | _CoreSymbols | None,
    corefile: CorePaths | None,
    swapfile: StrPath | None,
    flags: int,
    vmcoreinfo: VmcoreinfoText | None = None,
) -> _native.Handle:
    """Reads the default paths now (so callers may reassign them) and opens; raises KvmError."""
    core_symbols = execfile is CORE_SYMBOLS
    exec_path = None if isinstance(execfile, _CoreSymbols) else _fspath(execfile, "execfile")
    core_paths = _core_paths(corefile)
    swap_path = _fspath(swapfile, "swapfile")
    return _native.open_session(
        exec_path,
        core_paths,
        swap_path,
        _native_flags(flags),
        _defaults(),
        core_symbols,
        _vmcoreinfo(vmcoreinfo),
    )


class Kvm:
    """A kvm handle. `Kvm(execfile, corefile, swapfile, flags)` opens one or raises KvmError.

    The handle is a context manager; `close()` is idempotent. Every method records its error
    as the handle's error text (`geterr()`), and a handle opened through `kvm_rs.open` with
    an `errstr` also prints hard errors to stderr, for its whole life.
    """

    __slots__ = ("_errstr", "_info", "_session", "read")

    _session: _native.Handle
    _errstr: str | None
    _info: KvmInfo | None
    #: `read(addr, size) -> bytes`: `size` bytes of kernel virtual memory at `addr`; raises
    #: KvmError (with `.address` for an address the dump does not hold, `.partial` for the
    #: bytes read before it stopped, as at the end of a truncated dump), TypeError or
    #: ValueError for arguments that are no 64-bit address and size. The native method
    #: itself (no Python frame: the hot path of every triage script); it holds the GIL
    #: below 64 KiB.
    read: Callable[[int, int], bytes]

    def __init__(
        self,
        execfile: StrPath | _CoreSymbols | None = None,
        corefile: CorePaths | None = None,
        swapfile: StrPath | None = None,
        flags: int = os.O_RDONLY,
        *,
        vmcoreinfo: VmcoreinfoText | None = None,
    ) -> None:
        self._adopt(_open_native(execfile, corefile, swapfile, flags, vmcoreinfo), None)

    def _adopt(self, native: _native.Handle, errstr: str | None) -> None:
        self._session = native
        self._errstr = errstr
        self._info = None
        if errstr is None:  # else the class is _ReportingKvm, whose read is a method
            self.read = native.read_bytes

    @classmethod
    def _wrap(cls, native: _native.Handle, errstr: str | None) -> Kvm:
        # A handle that prints its errors (Sun's errstr) reads through Python to print them.
        handle = cls.__new__(cls if errstr is None else _ReportingKvm)
        handle._adopt(native, errstr)
        return handle

    def _record(self, error: KvmError) -> None:
        """Sticky error text; the Sun convention prints hard errors."""
        self._session.set_errtext(error.message)
        if error.hard:
            _conventions.sun_report(self._errstr, error.message)

    def _call(self, work: Any, *args: Any) -> Any:
        try:
            return work(*args)
        except KvmError as error:
            self._record(error)
            raise

    # -- lifecycle -----------------------------------------------------------------------

    def _close_status(self) -> int:
        return self._session.close()

    def close(self) -> None:
        """Releases the files. Closing again does nothing."""
        self._session.close()

    @property
    def closed(self) -> bool:
        return self._session.closed

    def __enter__(self) -> Kvm:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<kvm_rs.Kvm {state}>"

    # -- queries -------------------------------------------------------------------------

    def geterr(self) -> str:
        """The last error text; "" if no call has failed."""
        return self._session.errtext

    @property
    def info(self) -> KvmInfo:
        """Facts about the dump (SPEC §10); raises KvmError on a KVM_NO_FILES handle."""
        if self._info is None or self._session.closed:
            raw = self._call(self._session.info)
            if raw is None:
                error = KvmError("kvm_info: no core file (KVM_NO_FILES)")
                self._record(error)
                raise error
            self._info = KvmInfo(**raw)
        return self._info

    def nlist(self, names: Iterable[str]) -> dict[str, int]:
        """Runtime values of the names found (absent names are left out). `names` is a
        sequence of str or bytes: a single str is a TypeError."""
        _check_names(names, "names")
        wanted = list(names)
        found = self._nlist_raw([os.fsencode(name) for name in wanted])
        return {name: hit[1] for name, hit in zip(wanted, found, strict=False) if hit is not None}

    def read_physical(self, paddr: int, size: int) -> bytes:
        """`size` bytes of physical memory at `paddr`, with no address translation (any
        machine); raises KvmError as `read` does (`.address` is then physical)."""
        _check_read_args("kvm_read", "physical address", paddr, size)
        data, error = self._call(self._session.read_physical, paddr, size)
        if error is not None:
            self._record(error)
            if data:
                error.partial = data
            raise error
        result: bytes = data
        return result

    def _c_address(self, op: str, addr: Any) -> int | None:
        """For the C-style calls: `addr` as an int (TypeError if it is no integer), or None
        once the handle's error text says why it is no 64-bit address."""
        value = _integer(addr, "addr")
        message = _outside_address_space(op, value)
        if message is None:
            return value
        self._record(KvmError(message))
        return None

    def _read_raw(self, addr: int, size: int) -> tuple[bytes, KvmError | None]:
        data, error = self._call(self._session.read, addr, size)
        if error is not None:
            self._record(error)
        return data, error

    def write(self, addr: int, data: bytes) -> int:
        """Writes `data` at kernel virtual address `addr` into the core file (uncompressed
        dumps opened O_RDWR or O_WRONLY); returns the bytes written. `data` is bytes-like
        (TypeError otherwise); an address outside the 64-bit space is a ValueError."""
        payload = _bytes_of(data)
        address = _integer(addr, "addr")
        message = _outside_address_space("kvm_write", address)
        if message is not None:
            raise ValueError(message)
        written: int = self._call(self._session.write, address, payload)
        return written

    def dmesg(self) -> list[str]:
        """The kernel log, as the console prints it (`[    1.234567] text`), oldest first.
        Decoded from the printk ring with VMCOREINFO alone: no vmlinux debug info needed."""
        return [line for record in self.log() for line in record.lines()]

    def log(self) -> list[LogRecord]:
        """The kernel log's records, oldest first, as the ring holds them."""
        records: list[tuple[int, int, int, str | None, str]] = self._call(self._session.log)
        return [LogRecord(*record) for record in records]

    def tasks(self) -> ProcList:
        """Every task of the dumped kernel but the idle tasks (pid 0), in pid order, read
        from `init_task.tasks` and each thread group's thread list with the kernel's own BTF
        types (the exec file's `.BTF` section, else the dump's `__start_BTF`..`__stop_BTF`):
        no debug info needed. A dump that lacks a page of the lists gives every task still
        reachable, with `.complete` False and `.problems` saying why. Raises KvmError (no BTF
        in the dump: the SPEC's no-BTF message). Runs without the GIL; Ctrl-C stops it."""
        return proc_list(self._call(_native.tasks, self._session))

    def stack(self, pid: int | None = None, *, cpu: int | None = None) -> list[Frame]:
        """The backtrace of a task, innermost first: pid None the task that crashed (the
        CPU that panicked, `panic_cpu`); pid 0 the idle task of CPU `cpu` (default 0; the
        idle tasks all have pid 0, `cpu` picks one and is only taken with pid 0); any other
        pid that task. A task running on a CPU at the crash is unwound from that CPU's
        registers (the dump's NT_PRSTATUS notes), any other from the context the scheduler
        saved (x86_64 `thread.sp` -> `inactive_task_frame`, aarch64
        `thread.cpu_context`). Unwound with the kernel's ORC tables (x86_64, modules'
        too) or frame records (aarch64); a frame in a module is named by that module's own
        symbols. No debug info needed, but a symbol table (exec file or CORE_SYMBOLS) and,
        for a pid, BTF. Stops at the first user-space pc. Raises KvmError (no task with that
        pid, no crash registers, a saved stack pointer off the task's stack, no unwinder
        for the machine). Runs without the GIL; Ctrl-C stops it."""
        if cpu is not None and pid != 0:
            raise ValueError(f"Kvm.stack: cpu={cpu!r} picks an idle task: give it with pid=0")
        if cpu is not None and cpu < 0:
            raise ValueError(f"Kvm.stack: cpu={cpu!r} is negative")
        raw: list[tuple[int, str | None, int | None, str | None, bool]] = self._call(
            _native.stack, self._session, pid, cpu
        )
        return [Frame(*frame) for frame in raw]

    def signature(self) -> str:
        """The crash signature of SPEC §14: SHA-1 (hex) of the function names of the first
        6 reliable frames of the crashed task's backtrace below the panic machinery, compiler
        suffixes stripped (see `kvm_rs._signature`). The same bug gives the same signature
        on every boot and through every dump format. Raises KvmError as `stack()`."""
        return signature(self.stack())

    def modules(self) -> ModuleList:
        """The loaded modules, in the kernel's list order, read from the `modules` list with
        the kernel's BTF types (`mem[MOD_TEXT]` since 6.4, `core_layout` before, else
        `module_core`). A list that loops or leads outside the dump ends there, with
        `.complete` False and `.problems` saying why. Raises KvmError (no BTF: the SPEC's
        no-BTF message). Runs without the GIL; Ctrl-C stops it."""
        return module_list(self._call(_native.modules, self._session))

    def loadavg(self) -> tuple[float, float, float]:
        """The 1, 5 and 15-minute load averages (`avenrun`) as /proc/loadavg prints them,
        as floats (`0.56`, not avenrun / 2048). Needs no BTF. Raises KvmError (no symbol
        `avenrun`, its page not in the dump). Runs without the GIL."""
        return load_averages(self._call(_native.loadavg, self._session))

    def triage(self) -> TriageReport:
        """One report of the crash and the system (SPEC §14): see `TriageReport`. Reads the
        task list, the module list, the system facts and the kernel log with the kernel's
        BTF types and no debug info. Raises KvmError (no BTF; a symbol table of text
        symbols only). Runs without the GIL; Ctrl-C stops it."""
        procs = self.tasks()
        modules = self.modules()
        system: dict[str, Any] = self._call(_native.system, self._session)
        crash_time = self.info.vmcoreinfo.get("CRASHTIME")
        report = triage_report(
            system,
            int(crash_time) if crash_time is not None and crash_time.isdigit() else None,
            procs,
            modules,
        )
        # The crashed task: the one running on the CPU that panicked.
        running = [p for p in procs if p.on_cpu and p.cpu == report.crash_cpu]
        if len(running) == 1 and report.crash_cpu is not None:
            report = dataclasses.replace(
                report, crash_pid=running[0].pid, crash_comm=running[0].comm
            )
        try:
            backtrace = tuple(self.stack())
        except KvmError as error:
            problems = (*report.problems, f"backtrace: {error.message}")
            return dataclasses.replace(report, problems=problems)
        return dataclasses.replace(report, backtrace=backtrace, signature=signature(backtrace))

    def _nlist_raw(self, names: list[bytes]) -> list[tuple[int, int] | None]:
        result: list[tuple[int, int] | None] = self._call(self._session.nlist, names)
        return result


class _ReportingKvm(Kvm):
    """A handle opened with Sun's `errstr`: its read errors are printed too (SPEC 3)."""

    __slots__ = ()

    def read(self, addr: int, size: int) -> bytes:
        try:
            return self._session.read_bytes(addr, size)
        except KvmError as error:
            self._record(error)
            raise
