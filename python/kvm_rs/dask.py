"""Scanning dumps on a Dask cluster: `kvm_rs.dask.scan(paths, client)`.

Each worker opens its own files (paths must be visible to the workers: a shared file
system or the same machine); reports come back in the order of `paths`. Dask is an optional
extra: `pip install .[dask]`.

    from dask.distributed import Client
    import kvm_rs.dask

    client = Client("tcp://scheduler.example:8786")
    for report in kvm_rs.dask.scan(["/var/crash/a/dump.kdump", ...], client):
        print(report.path, report.ok, report.osrelease, report.panic)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ._handle import StrPath
from ._scan import ScanReport
from ._scan import scan as _scan_local


def _scan_batch(paths: list[str], execfile: str | None) -> list[dict[str, Any]]:
    """Runs on a worker: the native scan of one batch, as plain dicts (cheap to send)."""
    return [report.as_dict() for report in _scan_local(paths, execfile=execfile, threads=1)]


def scan(
    dumps: Iterable[StrPath],
    client: Any,
    execfile: StrPath | None = None,
    batch_size: int = 16,
) -> list[ScanReport]:
    """Spreads `kvm_rs.scan` over the workers of a `dask.distributed.Client`, `batch_size`
    paths per task; one report per path, in order. A dump that fails is a report, as in
    `kvm_rs.scan`; a worker that dies makes Dask retry its task elsewhere."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    paths = [os.fsdecode(os.fspath(path)) for path in dumps]
    exec_path = None if execfile is None else os.fsdecode(os.fspath(execfile))
    batches = [paths[at : at + batch_size] for at in range(0, len(paths), batch_size)]
    futures = client.map(_scan_batch, batches, execfile=exec_path, pure=False)
    reports: list[ScanReport] = []
    for batch in client.gather(futures):
        reports.extend(ScanReport(**entry) for entry in batch)
    return reports
