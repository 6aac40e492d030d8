"""kvm_rs.scan: many dumps described at once, in native threads; a bad file is a report with
the SPEC's message, never an exception. Checked against the real corpus (truth.json).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kvm_rs
import pytest
from broken import make_broken
from clirun import expected_compression
from kvm_rs import ScanReport

if TYPE_CHECKING:
    from conftest import Corpus

FORMATS = {"elf": "elf", "kdump-compressed": "kdump", "makedumpfile-flattened": "flattened"}
#: The 64-bit disk_dump_header: signature[8], header_version, new_utsname (6 x 65), pad,
#: timeval timestamp at 408, status 424, block_size 428, sub_hdr_size 432, bitmap_blocks 436.
PANIC = "sysrq triggered crash"
REPORT_KEYS = {
    "crash_pid",
    "crash_comm",
    "backtrace",
    "signature",
    "crash_problems",
    "path",
    "ok",
    "error",
    "format",
    "compression",
    "machine",
    "osrelease",
    "build_id",
    "crash_time",
    "kernel_offset",
    "page_size",
    "dump_level",
    "incomplete",
    "truncated",
    "dumped_pages",
    "panic",
    "readable",
    "reason",
    "parts",
    "pfn_range",
    "exec_format",
    "vmcoreinfo_source",
}


def made_by_makedumpfile(truth: dict[str, Any]) -> bool:
    return truth["made_by"].startswith("makedumpfile")


@dataclass(frozen=True)
class Broken:
    """Deliberately broken files, each with the message its open must give."""

    folder: Path
    expected: dict[str, str]  # path -> exact error message


@pytest.fixture(scope="module")
def broken(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Broken:
    folder = tmp_path_factory.mktemp("broken")
    return Broken(folder, make_broken(folder, corpus.dump("boot-nokaslr.mdf-d31-zlib.kdump")))


@pytest.fixture(scope="module")
def dump_paths(corpus: Corpus) -> list[str]:
    return [str(corpus.dump(name)) for name in corpus.dumps]


@pytest.fixture(scope="module")
def reports(corpus: Corpus, dump_paths: list[str]) -> dict[str, ScanReport]:
    """One scan of every corpus dump, no execfile (each dump is its own symbol source)."""
    result = kvm_rs.scan(dump_paths, threads=2)
    return {name: report for name, report in zip(corpus.dumps, result, strict=False)}


def assert_matches_truth(report: ScanReport, corpus: Corpus, name: str) -> None:
    truth = corpus.dump_truth(name)
    assert report.ok, report.error
    assert report.error is None
    assert report.path == str(corpus.dump(name))
    assert report.format == FORMATS[truth["format"]]
    assert report.compression == expected_compression(truth)
    assert report.machine == "x86_64"
    assert report.osrelease == truth["vmcoreinfo_OSRELEASE"]
    assert report.build_id == corpus.build_id
    assert report.kernel_offset == int(truth["KERNELOFFSET"], 16)
    assert report.page_size == 4096
    assert report.truncated is False
    assert report.incomplete is False
    assert isinstance(report.dumped_pages, int)
    assert report.dumped_pages > 0
    assert report.panic == PANIC
    # Memory, not only headers: the release at init_uts_ns reads back through the page tables.
    assert report.readable is True, report.reason
    assert report.reason is None
    assert report.parts == (report.path,)
    assert report.pfn_range is None


def test_every_dump_reports_its_truth(
    corpus: Corpus, reports: dict[str, ScanReport], dump_name: str
) -> None:
    assert_matches_truth(reports[dump_name], corpus, dump_name)


def test_makedumpfile_dumps_report_dump_level_31(
    corpus: Corpus, reports: dict[str, ScanReport]
) -> None:
    kdumps = [n for n in corpus.dumps if made_by_makedumpfile(corpus.dump_truth(n))]
    assert kdumps, "truth.json names no makedumpfile dump"
    assert {n: reports[n].dump_level for n in kdumps} == dict.fromkeys(kdumps, 31)


def test_elf_dumps_have_no_dump_level(corpus: Corpus, reports: dict[str, ScanReport]) -> None:
    for name in corpus.dumps_of_format("elf"):
        assert reports[name].dump_level is None, name


def test_one_report_per_path_in_order(
    corpus: Corpus, broken: Broken, dump_paths: list[str]
) -> None:
    bad = list(broken.expected)
    # Interleaved, with a repeat: order is the caller's, not completion order.
    paths = [bad[0], dump_paths[0], bad[1], *dump_paths[1:], bad[2], bad[3], dump_paths[0]]
    result = kvm_rs.scan(paths, threads=4)
    assert [r.path for r in result] == paths
    assert all(isinstance(r, ScanReport) for r in result)
    for path, report in zip(paths, result, strict=False):
        if path in broken.expected:
            assert not report.ok
            assert report.error == broken.expected[path]
        else:
            assert report.ok, report.error


def test_threads_1_and_2_give_equal_reports(broken: Broken, dump_paths: list[str]) -> None:
    paths = [*dump_paths, *broken.expected]
    one = kvm_rs.scan(paths, threads=1)
    two = kvm_rs.scan(paths, threads=2)
    assert one == two
    assert [r.as_dict() for r in one] == [r.as_dict() for r in two]


def test_more_threads_than_paths(dump_paths: list[str]) -> None:
    assert kvm_rs.scan(dump_paths[:1], threads=16) == kvm_rs.scan(dump_paths[:1], threads=1)


def test_empty_list() -> None:
    assert kvm_rs.scan([]) == []


def test_broken_files_never_raise(broken: Broken, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dump"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    expected = {
        **broken.expected,
        str(missing): f"{missing}: No such file or directory",
        str(fifo): f"{fifo}: not a kernel core file",
    }
    result = kvm_rs.scan(list(expected), threads=2)
    assert len(result) == len(expected)
    for report, (path, message) in zip(result, expected.items(), strict=False):
        assert report.path == path
        assert report.ok is False
        assert report.error == message
        # Only the kdump cut inside its header says so (SPEC 15).
        assert report.truncated is ("truncated core" in message), message
        assert report.osrelease is None
        assert report.format is None
        assert report.panic is None


def test_an_empty_folder_gives_no_reports(tmp_path: Path) -> None:
    assert kvm_rs.scan([tmp_path]) == []
    assert list(kvm_rs.scan_iter([tmp_path])) == []


def test_report_fields(dump_paths: list[str], broken: Broken) -> None:
    good, bad = kvm_rs.scan([dump_paths[0], next(iter(broken.expected))], threads=1)
    assert set(good.as_dict()) == REPORT_KEYS
    assert set(bad.as_dict()) == REPORT_KEYS


def test_accepts_path_objects_and_bytes(corpus: Corpus) -> None:
    name = corpus.dumps[0]
    path = corpus.dump(name)
    by_path, by_bytes = kvm_rs.scan([path, os.fsencode(path)], threads=2)
    assert by_path.path == str(path)
    assert by_bytes.path == str(path)
    assert_matches_truth(by_path, corpus, name)
    assert by_path == by_bytes


@pytest.mark.parametrize("kind", ["system.map", "vmlinux"])
def test_execfile_of_the_same_kernel(
    corpus: Corpus, dump_paths: list[str], reports: dict[str, ScanReport], kind: str
) -> None:
    result = kvm_rs.scan(dump_paths, execfile=corpus.exec_path(kind), threads=2)
    for name, report in zip(corpus.dumps, result, strict=False):
        assert_matches_truth(report, corpus, name)
        # The exec file changes how the dump is opened, not what the dump is.
        assert report.exec_format == {"system.map": "system.map", "vmlinux": "elf"}[kind]
        assert report == dataclasses.replace(reports[name], exec_format=report.exec_format)


def test_execfile_of_another_kernel_is_a_mismatch(corpus: Corpus, dump_paths: list[str]) -> None:
    result = kvm_rs.scan(dump_paths, execfile=str(corpus.kallsyms), threads=2)
    assert [r.path for r in result] == dump_paths
    for path, report in zip(dump_paths, result, strict=False):
        assert report.ok is False
        assert report.error is not None
        assert "does not match" in report.error
        assert report.error.startswith(f"{corpus.kallsyms}: does not match {path} (")
        assert report.osrelease is None
        assert report.panic is None
