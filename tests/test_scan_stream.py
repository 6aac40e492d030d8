"""kvm_rs.scan_iter: reports as each dump is done (SPEC 15), on the same native stream as
kvm_rs.scan; cancelling it (close, Ctrl-C) stops the work. Also what the stream changed for
both: the exec file checked once, truncated files saying so, split parts in one report.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import elfwriter
import kvm_rs
import pytest
from kvm_rs import KvmError, ScanReport

if TYPE_CHECKING:
    from conftest import Corpus, Fleet

SMALL_KDUMP = "boot-nokaslr.mdf-d31-zlib.kdump"
BIG_ELF = "boot-nokaslr.qemu-elf.vmcore"
SPLIT_SET = "big-a.mdf-d31-zlib-split"
#: A cut this long of SMALL_KDUMP ends inside its page descriptors.
CUT = 100_000


def slow_dump(path: Path, size: int = 2 << 30) -> Path:
    """An ELF core with no VMCOREINFO and one sparse PT_LOAD of `size` bytes: its open
    searches every page for the kernel's VMCOREINFO (SPEC 13): a tenth of a second to a few
    seconds a GiB (a small corpus dump: milliseconds), while the file takes no disk space.
    The dump that is still being described."""
    data, layout = elfwriter.elf_core_with_layout(
        None, [elfwriter.Load(0xFFFF_8880_0000_0000, 0, b"\0" * 4096)]
    )
    header = bytearray(data)
    # The PT_LOAD is the second program header; p_filesz and p_memsz are at 32 and 40.
    struct.pack_into("<QQ", header, layout.phoff + 56 + 32, size, size)
    with path.open("wb") as file:
        file.write(header)
        file.truncate(layout.load_offsets[0] + size)
    return path


def open_files() -> set[str]:
    """The files this process holds open."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
    return found


def threads_alive() -> list[str]:
    """The names of this process's threads."""
    names = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # ended since the listing
            names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
    return sorted(names)


def key(report: ScanReport) -> tuple[str, str]:
    return (report.path, repr(report))


@pytest.fixture(scope="module")
def dump_paths(corpus: Corpus) -> list[str]:
    return [str(corpus.dump(name)) for name in corpus.dumps]


def test_scan_iter_yields_every_report_scan_gives(
    corpus: Corpus, dump_paths: list[str], tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing")
    paths = [*dump_paths, missing, dump_paths[0]]
    streamed = list(kvm_rs.scan_iter(paths, threads=2))
    ordered = kvm_rs.scan(paths, threads=2)
    assert [r.path for r in ordered] == paths
    assert all(isinstance(r, ScanReport) for r in streamed)
    assert sorted(streamed, key=key) == sorted(ordered, key=key)
    assert sum(r.ok for r in streamed) == len(dump_paths) + 1


def test_reports_come_as_dumps_finish_not_in_input_order(corpus: Corpus) -> None:
    """One thread takes the largest file first: the big ELF, given last, comes first."""
    small, big = str(corpus.dump(SMALL_KDUMP)), str(corpus.dump(BIG_ELF))
    assert os.path.getsize(big) > os.path.getsize(small)
    streamed = [r.path for r in kvm_rs.scan_iter([small, big], threads=1)]
    assert streamed == [big, small]
    assert [r.path for r in kvm_rs.scan([small, big], threads=1)] == [small, big]


def test_first_report_comes_while_a_slow_dump_is_still_open(corpus: Corpus, tmp_path: Path) -> None:
    """Two threads: one describes the slow dump (largest first), the other the small ones;
    the first small report arrives while the slow dump's file is still open in this
    process (its open is still searching), not after the whole scan."""
    slow = str(slow_dump(tmp_path / "slow.vmcore"))
    small = [str(corpus.dump(n)) for n in corpus.dumps_of_format("kdump-compressed")]
    stream = kvm_rs.scan_iter([*small, slow], threads=2)
    first = next(stream)
    assert first.path in small
    assert first.ok, first.error
    assert slow in open_files()
    rest = list(stream)
    assert sorted(r.path for r in [first, *rest]) == sorted([*small, slow])
    assert slow not in open_files()


def test_closing_early_stops_the_work(corpus: Corpus) -> None:
    baseline = threads_alive()
    paths = [str(corpus.dump(SMALL_KDUMP))] * 400
    stream = kvm_rs.scan_iter(paths, threads=2)
    assert next(stream).ok
    assert "kvm_rs-scan" in threads_alive()  # the scan's thread and its workers
    stream.close()
    # close() cancels and joins: no thread outlives it, no file stays open.
    assert threads_alive() == baseline
    assert str(corpus.dump(SMALL_KDUMP)) not in open_files()
    with pytest.raises(StopIteration):
        next(stream)


def test_a_break_out_of_the_loop_stops_the_work(corpus: Corpus) -> None:
    baseline = threads_alive()
    paths = [str(corpus.dump(SMALL_KDUMP))] * 400
    stream = kvm_rs.scan_iter(paths, threads=2)
    for taken, report in enumerate(stream, 1):
        assert report.ok
        if taken == 3:
            break
    stream.close()
    assert threads_alive() == baseline


CHILD = textwrap.dedent(
    """
    import sys
    import kvm_rs

    paths = sys.argv[1:]
    seen = 0
    try:
        for report in kvm_rs.scan_iter(paths, threads=2):
            seen += 1
            if seen == 1:
                print("first", flush=True)
    except KeyboardInterrupt:
        print(f"interrupted after {seen} of {len(paths)}", flush=True)
        sys.exit(0)
    print(f"finished {seen}", flush=True)
    """
)


def test_ctrl_c_cancels_the_scan(corpus: Corpus, tmp_path: Path) -> None:
    """SIGINT after the first report: KeyboardInterrupt comes out of the iterator (the
    slow dump is still being described) and the child exits at once, not after the scan."""
    slow = str(slow_dump(tmp_path / "slow.vmcore", 16 << 30))
    paths = [slow, *[str(corpus.dump(SMALL_KDUMP))] * 20]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *paths],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starts background jobs with SIGINT ignored: give the child the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "first\n"
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, stderr
    # The 16 GiB search takes far longer than the small dumps: the slow one never reports.
    assert stdout.startswith("interrupted after "), stdout
    assert stdout.strip() != f"interrupted after {len(paths)} of {len(paths)}"
    assert "Traceback" not in stderr


@pytest.mark.parametrize("dumps", ["/var/crash", b"/var/crash", Path("/var/crash")])
def test_one_path_instead_of_a_sequence_is_a_type_error(dumps: object) -> None:
    name = type(dumps).__name__
    with pytest.raises(TypeError, match=f"^dumps must be a sequence of paths, not {name}$"):
        kvm_rs.scan(dumps)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=f"^dumps must be a sequence of paths, not {name}$"):
        kvm_rs.scan_iter(dumps)  # type: ignore[arg-type]


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_threads_must_be_a_positive_int(threads: object, dump_paths: list[str]) -> None:
    with pytest.raises(ValueError, match=r"^threads must be a positive int$"):
        kvm_rs.scan(dump_paths, threads=threads)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^threads must be a positive int$"):
        kvm_rs.scan_iter(dump_paths, threads=threads)  # type: ignore[arg-type]


def test_a_missing_exec_file_raises_once(dump_paths: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "vmlinux"
    with pytest.raises(KvmError) as raised:
        kvm_rs.scan(dump_paths, execfile=missing)
    assert raised.value.message == f"{missing}: No such file or directory"
    assert raised.value.errno == errno.ENOENT
    # scan_iter raises at the call, before any report (none would have been given).
    with pytest.raises(KvmError) as again:
        kvm_rs.scan_iter([tmp_path / "missing-dump", *dump_paths], execfile=missing)
    assert again.value.message == raised.value.message


@pytest.mark.parametrize(
    ("content", "fault"),
    [(b"", "empty file"), (b"hello\n", "unrecognized symbol table format")],
)
def test_an_exec_file_that_is_no_symbol_table_raises(
    dump_paths: list[str], tmp_path: Path, content: bytes, fault: str
) -> None:
    bad = tmp_path / "System.map"
    bad.write_bytes(content)
    with pytest.raises(KvmError, match=f"^{re.escape(str(bad))}: {fault}$"):
        kvm_rs.scan(dump_paths, execfile=bad)


def test_a_good_exec_file_mismatching_a_dump_is_that_dumps_report(
    corpus: Corpus, dump_paths: list[str]
) -> None:
    reports = kvm_rs.scan(dump_paths[:2], execfile=corpus.kallsyms)
    assert [r.ok for r in reports] == [False, False]
    assert all(r.error and "does not match" in r.error for r in reports)


def test_a_cut_kdump_says_truncated(corpus: Corpus, tmp_path: Path) -> None:
    cut = tmp_path / "cut.kdump"
    with corpus.dump(SMALL_KDUMP).open("rb") as source:
        cut.write_bytes(source.read(CUT))
    [report] = kvm_rs.scan([cut])
    assert report.ok is False
    assert report.error == f"{cut}: truncated core: page descriptors"
    assert report.truncated is True
    assert report.as_dict()["truncated"] is True
    [streamed] = kvm_rs.scan_iter([cut])
    assert streamed == report
    # A whole dump and a file that is not a dump are not truncated.
    whole, text = kvm_rs.scan([corpus.dump(SMALL_KDUMP), corpus.dir / "README.md"])
    assert (whole.ok, whole.truncated) == (True, False)
    assert (text.ok, text.truncated) == (False, False)


def test_split_parts_among_the_inputs_are_one_report(
    fleet: Fleet, corpus: Corpus, tmp_path: Path
) -> None:
    part1, part2 = (str(fleet.dump(p)) for p in sorted(fleet.split_sets[SPLIT_SET]["parts"]))
    other = str(corpus.dump(SMALL_KDUMP))
    missing = str(tmp_path / "missing")
    paths = [other, part2, missing, part1]
    ordered = kvm_rs.scan(paths, threads=2)
    assert [r.path for r in ordered] == [other, part2, missing]
    joined = ordered[1]
    assert joined.ok, joined.error
    assert joined.parts == (part2, part1)
    assert joined.pfn_range is None
    streamed = list(kvm_rs.scan_iter(paths, threads=2))
    assert sorted(streamed, key=key) == sorted(ordered, key=key)
    # A part alone is reported alone, with its range.
    [alone] = kvm_rs.scan_iter([part2])
    assert alone.ok, alone.error
    assert alone.parts == (part2,)
    assert alone.pfn_range is not None
