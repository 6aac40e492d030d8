"""kvm_rs.dask.scan on a real distributed.LocalCluster: two worker processes on loopback,
each opening its own files; reports come back in the order of the paths."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import kvm_rs
import kvm_rs.dask
import pytest

if TYPE_CHECKING:
    from conftest import Corpus

distributed = pytest.importorskip(
    "distributed", reason="Dask is an optional extra (pip install .[dask]); .ci/run installs it"
)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    with cluster, distributed.Client(cluster) as dask_client:
        yield dask_client


def test_scan_over_two_workers_keeps_order(corpus: Corpus, client, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    text = tmp_path / "text"
    text.write_text("this is a text file\n")
    dumps = [corpus.dump(name) for name in corpus.dumps]
    paths = [dumps[0], empty, *dumps[1:], text]
    reports = kvm_rs.dask.scan(paths, client, batch_size=2)
    assert [r.path for r in reports] == [str(p) for p in paths]
    by_path = {r.path: r for r in reports}
    assert by_path[str(empty)].error == f"{empty}: empty file"
    assert by_path[str(text)].error == f"{text}: not a kernel core file"
    for name, dump in zip(corpus.dumps, dumps, strict=False):
        report = by_path[str(dump)]
        assert report.ok, report.error
        assert report.osrelease == corpus.truth["dumps"][name]["vmcoreinfo_OSRELEASE"]
    # The work really was spread: both workers ran tasks.
    assert len(client.scheduler_info()["workers"]) == 2


def test_scan_with_execfile_matches_local_scan(corpus: Corpus, client) -> None:
    paths = [corpus.dump(name) for name in corpus.dumps]
    remote = kvm_rs.dask.scan(paths, client, execfile=corpus.system_map)
    local = kvm_rs.scan(paths, execfile=corpus.system_map)
    assert remote == local
