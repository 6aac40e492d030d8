"""kvm_rs.scan: validate many dumps at once, in native threads with the GIL released."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from . import _native
from ._handle import StrPath, VmcoreinfoText, _CoreSymbols, _defaults, _fspath, _vmcoreinfo


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

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_FIELDS = {f.name for f in fields(ScanReport)}


def scan(
    dumps: Iterable[StrPath],
    execfile: StrPath | _CoreSymbols | None = None,
    threads: int | None = None,
    *,
    vmcoreinfo: VmcoreinfoText | None = None,
) -> list[ScanReport]:
    """Opens and describes every dump, `threads` at a time (default: one per CPU), in Rust
    threads with the GIL released. One report per path, in order; a file that fails to open
    is a report with the libkvm message, never an exception. With no `execfile`, each dump
    is its own symbol source (its kallsyms tables), as with `CORE_SYMBOLS` (a dump before
    6.0 has none: it is described without symbols, `exec_format` None); with one, each dump
    must match it. The parts of a split dump among `dumps` are opened together and reported
    once, where the first of them stands."""
    encoded = [_fspath(path, "path") or b"" for path in dumps]
    workers = threads if threads is not None else (os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError("threads must be a positive int")
    raw = _native.scan(
        encoded,
        None if isinstance(execfile, _CoreSymbols) else _fspath(execfile, "execfile"),
        workers,
        _defaults(),
        _vmcoreinfo(vmcoreinfo),
    )
    reports = []
    for entry in raw:
        entry["path"] = os.fsdecode(entry["path"])
        entry["parts"] = tuple(os.fsdecode(part) for part in entry["parts"])
        reports.append(ScanReport(**{k: v for k, v in entry.items() if k in _FIELDS}))
    return reports
