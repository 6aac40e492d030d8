"""kvm_rs.scan and scan_iter: validate many dumps at once, in native threads with the GIL
released; folders walked as crash folders (SPEC 15)."""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Generator, Iterable
from dataclasses import dataclass, fields
from typing import Any

from . import _native
from ._handle import Frame, StrPath, VmcoreinfoText, _CoreSymbols, _defaults, _fspath, _vmcoreinfo
from ._signature import signature


@dataclass(frozen=True)
class ScanReport:
    """What one dump is, or why it could not be opened (`ok` False, `error` the message).
    `readable` says whether its memory reads back right through the kernel's page tables
    (the release at init_uts_ns equals VMCOREINFO's); `reason` says why not. The parts of a
    split dump are one report: `path` is the first part, `parts` all of them."""

    path: str
    ok: bool
    error: str | None = None
    readable: bool = False
    reason: str | None = None
    parts: tuple[str, ...] = ()
    format: str | None = None
    compression: str | None = None
    machine: str | None = None
    osrelease: str | None = None
    build_id: str | None = None
    crash_time: int | None = None
    kernel_offset: int | None = None
    page_size: int | None = None
    dump_level: int | None = None
    incomplete: bool = False
    truncated: bool = False
    dumped_pages: int | None = None
    panic: str | None = None
    pfn_range: tuple[int, int] | None = None
    exec_format: str | None = None
    vmcoreinfo_source: str | None = None
    # `triage=True` only (None otherwise): the task running on the CPU that panicked, its
    # backtrace, the SPEC 14 signature of it, and why any of them is missing.
    crash_pid: int | None = None
    crash_comm: str | None = None
    backtrace: tuple[Frame, ...] | None = None
    signature: str | None = None
    crash_problems: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_FIELDS = {f.name for f in fields(ScanReport)}

#: How much of a file tells text from a dump.
_SNIFF_BYTES = 512


def _sniff_text(path: str) -> bool:
    """Is this file text (a console log, a kexec command line, dmesg output)? Crash folders
    of kdump-tools and kdump-utils hold those beside the dump; they are not failed dumps.
    An empty file is not text: an empty vmcore is a dump that failed, and is reported.
    Raises OSError when the file cannot be read."""
    with open(path, "rb") as file:
        head = file.read(_SNIFF_BYTES)
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the end of the sniffed bytes is still text.
        return error.start >= len(head) - 3
    return True


def _is_text(path: str) -> bool:
    """`_sniff_text`, False for a file that cannot be read (it is reported, with why)."""
    try:
        return _sniff_text(path)
    except OSError:
        return False


#: The text files kdump-tools (dmesg.<ts>, kexec_cmd) and kdump-utils (vmcore-dmesg.txt,
#: kexec-dmesg.log) write beside a dump: one left empty (the log could not be saved) is
#: still not a dump.
_COMPANION = re.compile(r"(dmesg.*|.*\.(txt|log)|kexec_cmd)")


def _unreadable(path: str, error: OSError) -> ScanReport:
    """The report of a path the walk cannot read: the OS's reason, as libkvm words it."""
    reason = error.strerror or str(error)
    return ScanReport(path=path, ok=False, error=f"{path}: {reason}", parts=(path,))


#: One entry of the expanded input: a file for the native scan, or a report made here.
_Entry = str | ScanReport


def _walk(folder: str, seen: set[tuple[int, int]], out: list[_Entry]) -> None:
    """The files of `folder`, recursively, in sorted order: dumps (by content) and files
    that cannot be read; text files skipped. Each folder or file is taken once, however
    many links reach it (`seen`: device and inode)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as error:
        out.append(_unreadable(folder, error))
        return
    for name in names:
        path = os.path.join(folder, name)
        try:
            status = os.stat(path)  # follows links: a dangling one or a loop fails here
        except OSError as error:
            out.append(_unreadable(path, error))
            continue
        key = (status.st_dev, status.st_ino)
        if key in seen:
            continue
        seen.add(key)
        if stat.S_ISDIR(status.st_mode):
            _walk(path, seen, out)
        elif stat.S_ISREG(status.st_mode):
            if status.st_size == 0 and _COMPANION.fullmatch(name):
                continue
            try:
                if _sniff_text(path):
                    continue
            except OSError as error:
                out.append(_unreadable(path, error))
                continue
            out.append(path)
        else:
            # A device, FIFO or socket is never opened to sniff: the native open says
            # what it is (O_NONBLOCK: a FIFO cannot hang it).
            out.append(path)


def _expand(dumps: Iterable[StrPath]) -> list[_Entry]:
    """Every path given, folders walked (crash-folder layouts of kdump-tools and
    kdump-utils: SPEC 15). A file named is always taken, even text or seen before; a path
    that is missing or cannot be read is a failed report."""
    if isinstance(dumps, (str, bytes, os.PathLike)):
        raise TypeError(f"dumps must be a sequence of paths, not {type(dumps).__name__}")
    out: list[_Entry] = []
    seen: set[tuple[int, int]] = set()
    for given in dumps:
        path = os.fsdecode(_fspath(given, "path") or b"")
        try:
            status = os.stat(path)
        except OSError as error:
            out.append(_unreadable(path, error))
            continue
        key = (status.st_dev, status.st_ino)
        if stat.S_ISDIR(status.st_mode):
            if key not in seen:
                seen.add(key)
                _walk(path, seen, out)
        else:
            seen.add(key)
            out.append(path)
    return out


def _threads(threads: int | None) -> int:
    workers = threads if threads is not None else (os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError("threads must be a positive int")
    return workers


def _report(entry: dict[str, Any]) -> ScanReport:
    entry["path"] = os.fsdecode(entry["path"])
    entry["parts"] = tuple(os.fsdecode(part) for part in entry["parts"])
    if "frames" in entry:  # a triage scan
        frames = tuple(Frame(*frame) for frame in entry.pop("frames"))
        entry["backtrace"] = frames
        entry["signature"] = signature(frames) if frames else None
        entry["crash_problems"] = tuple(entry["crash_problems"])
    return ScanReport(**{k: v for k, v in entry.items() if k in _FIELDS})


def _start(
    dumps: Iterable[StrPath],
    execfile: StrPath | _CoreSymbols | None,
    threads: int | None,
    vmcoreinfo: VmcoreinfoText | None,
    triage: bool,
) -> Generator[tuple[int, ScanReport], None, None]:
    """Checks the arguments and the exec file, starts the native scan, and returns the
    reports as (position in the expanded input, report) in the order they are ready: the
    reports made here first (they cost nothing), then the dumps' as each is done."""
    workers = _threads(threads)
    entries = _expand(dumps)
    files = [(at, entry) for at, entry in enumerate(entries) if isinstance(entry, str)]
    stream = _native.scan_stream(
        [os.fsencode(path) for _, path in files],
        None if isinstance(execfile, _CoreSymbols) else _fspath(execfile, "execfile"),
        workers,
        _defaults(),
        _vmcoreinfo(vmcoreinfo),
        triage,
    )
    return _follow(stream, entries, [at for at, _ in files])


def _follow(
    stream: _native.ScanStream, entries: list[_Entry], positions: list[int]
) -> Generator[tuple[int, ScanReport], None, None]:
    try:
        for at, entry in enumerate(entries):
            if isinstance(entry, ScanReport):
                yield at, entry
        for raw in stream:
            yield positions[raw["index"]], _report(raw)
    except BaseException:
        # Closed early, Ctrl-C or an error: the dumps not started are cancelled and those in
        # flight (milliseconds each; another Ctrl-C stops the wait) finish, so that the
        # caller goes on with their files closed and their memory back.
        stream.close()
        raise


def scan_iter(
    dumps: Iterable[StrPath],
    execfile: StrPath | _CoreSymbols | None = None,
    threads: int | None = None,
    *,
    vmcoreinfo: VmcoreinfoText | None = None,
    triage: bool = False,
) -> Generator[ScanReport, None, None]:
    """`scan`'s reports as each dump is done (largest files start first), not in input
    order. The scan runs in native threads; waiting for a report releases the GIL. Closing
    the iterator, or KeyboardInterrupt while it waits, cancels the dumps not yet started.
    The arguments and the exec file are checked at the call, as `scan` checks them."""
    return _reports_only(_start(dumps, execfile, threads, vmcoreinfo, triage))


def _reports_only(
    found: Generator[tuple[int, ScanReport], None, None],
) -> Generator[ScanReport, None, None]:
    with contextlib.closing(found):
        for _, report in found:
            yield report


def scan(
    dumps: Iterable[StrPath],
    execfile: StrPath | _CoreSymbols | None = None,
    threads: int | None = None,
    *,
    vmcoreinfo: VmcoreinfoText | None = None,
    triage: bool = False,
) -> list[ScanReport]:
    """Opens and describes every dump, `threads` at a time (default: one per CPU), in Rust
    threads with the GIL released. One report per dump, in input order; a file that fails
    to open is a report with the libkvm message, never an exception. A folder is walked
    (recursively, sorted, following links once): every file that is a dump by its content
    is reported, text files (logs, dmesg, kexec_cmd) are skipped, and a folder, file or link
    that cannot be read is a failed report with the OS's reason. A file named is always
    reported. With no `execfile`, each dump is its own symbol source (its kallsyms tables),
    as with `CORE_SYMBOLS` (a dump before 6.0 has none: it is described without symbols,
    `exec_format` None); with one, each dump must match it, and one that cannot be loaded
    at all raises KvmError before any dump is opened. The parts of a split dump among
    `dumps` are opened together and reported once, where the first of them stands.
    `dumps` must be a sequence of paths (TypeError for a single str, bytes or PathLike);
    `threads` a positive int (ValueError). With `triage`, each report also names the task
    that crashed, its backtrace and the crash signature (SPEC 14; it costs a task-list walk
    and an unwind per dump)."""
    started = _start(dumps, execfile, threads, vmcoreinfo, triage)
    found = sorted(started, key=lambda item: item[0])
    return [report for _, report in found]
