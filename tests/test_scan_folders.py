"""kvm_rs.scan over folders (SPEC 15): the crash-folder layouts of kdump-tools
(/var/crash/<YYYYMMDDHHMM>/dump.<ts> + dmesg.<ts>, /var/crash/kexec_cmd) and kdump-utils
(/var/crash/<host>-<date>/vmcore + vmcore-dmesg.txt + kexec-dmesg.log, vmcore-incomplete).
Every dump by content is reported, text is skipped, what cannot be read is a failed report
with the OS's reason, links are followed once.

The scans run in a child process: as root, one without CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH (setpriv), so that a mode-000 folder is unreadable as it is for a user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kvm_rs
import pytest

if TYPE_CHECKING:
    from conftest import Corpus

#: Ends inside the page descriptors of boot-nokaslr.mdf-d31-zlib.kdump.
CUT = 100_000
NO_DAC = "-dac_override,-dac_read_search"

CHILD = """
import json, sys
import kvm_rs
paths = json.loads(sys.argv[1])
ordered = [r.as_dict() for r in kvm_rs.scan(paths, threads=2)]
streamed = [r.as_dict() for r in kvm_rs.scan_iter(paths, threads=2)]
print(json.dumps({"ordered": ordered, "streamed": streamed}))
"""


def scan_as_a_user(paths: list[Path | str]) -> list[dict[str, Any]]:
    """`kvm_rs.scan(paths)` in a child that file permissions apply to (as root: setpriv
    drops the capabilities that bypass them); checks scan_iter gives the same reports."""
    command = [sys.executable, "-c", CHILD, json.dumps([str(p) for p in paths])]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("running as root needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
        command = [setpriv, f"--inh-caps={NO_DAC}", f"--bounding-set={NO_DAC}", *command]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    ordered: list[dict[str, Any]] = found["ordered"]

    def by_path(reports: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps(r, sort_keys=True) for r in reports)

    assert by_path(found["streamed"]) == by_path(ordered)
    return ordered


@dataclass(frozen=True)
class Expected:
    path: Path
    error: str | None  # None: the dump opened
    truncated: bool = False


@dataclass(frozen=True)
class CrashTree:
    root: Path
    expected: list[Expected]  # in walk order


def text(path: Path, content: str) -> None:
    path.write_text(content)


@pytest.fixture
def crash(corpus: Corpus, tmp_path: Path) -> Iterator[CrashTree]:
    root = tmp_path / "crash"
    root.mkdir()
    zlib = corpus.dump("boot-nokaslr.mdf-d31-zlib.kdump")
    # kdump-utils: <host>-<date>/vmcore with its logs.
    utils = root / "127.0.0.1-2024-01-03-10:00:00"
    utils.mkdir()
    (utils / "vmcore").symlink_to(corpus.dump("boot-nokaslr.mdf-d31-zstd.kdump"))
    text(utils / "vmcore-dmesg.txt", "[    0.000000] Linux version 6.1.0-56-amd64\n")
    text(utils / "kexec-dmesg.log", "kdump: saving vmcore\nkdump: saving vmcore failed\n")
    # ... and one whose copy ran out of space.
    incomplete = root / "192.168.0.9-2024-01-04-11:00:00"
    incomplete.mkdir()
    with zlib.open("rb") as source:
        (incomplete / "vmcore-incomplete").write_bytes(source.read(CUT))
    text(incomplete / "vmcore-dmesg.txt", "[    1.000000] panic\n")
    # kdump-tools: <YYYYMMDDHHMM>/dump.<ts> + dmesg.<ts>, kexec_cmd at the top.
    tools = root / "202401011200"
    tools.mkdir()
    (tools / "dump.202401011200").symlink_to(zlib)
    text(tools / "dmesg.202401011200", "[    2.000000] sysrq: Trigger a crash\n")
    (tools / "up").symlink_to("..")  # a loop back to the root: not walked again
    (tools / "kexec-dmesg.log").write_bytes(b"")  # a companion left empty: still not a dump
    empty = root / "202401021300"
    empty.mkdir()
    (empty / "dump.202401021300").write_bytes(b"")
    text(empty / "dmesg.202401021300", "[    3.000000] kdump: no space left\n")
    locked_file = empty / "vmcore.unreadable"
    shutil.copyfile(zlib, locked_file)
    locked_file.chmod(0)
    text(root / "kexec_cmd", "kexec -p --command-line=... /boot/vmlinuz-6.1.0-56-amd64\n")
    # Links: to a dump already seen, dangling, a loop, a folder elsewhere.
    (root / "again").symlink_to(tools / "dump.202401011200")
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "vmcore").symlink_to(corpus.dump("boot-nokaslr.mdf-d31-lzo.kdump"))
    (root / "linked").symlink_to(elsewhere)
    locked = root / "locked"
    locked.mkdir()
    (locked / "vmcore").symlink_to(zlib)
    locked.chmod(0)
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    loop = "Too many levels of symbolic links"
    expected = [
        Expected(utils / "vmcore", None),
        Expected(
            incomplete / "vmcore-incomplete",
            f"{incomplete / 'vmcore-incomplete'}: truncated core: page descriptors",
            truncated=True,
        ),
        Expected(tools / "dump.202401011200", None),
        Expected(empty / "dump.202401021300", f"{empty / 'dump.202401021300'}: empty file"),
        Expected(locked_file, f"{locked_file}: Permission denied"),
        Expected(root / "dangling", f"{root / 'dangling'}: No such file or directory"),
        Expected(root / "linked" / "vmcore", None),
        Expected(locked, f"{locked}: Permission denied"),
        Expected(root / "loop-a", f"{root / 'loop-a'}: {loop}"),
        Expected(root / "loop-b", f"{root / 'loop-b'}: {loop}"),
    ]
    yield CrashTree(root, expected)
    locked.chmod(0o755)  # so that pytest can remove it


def assert_reports(reports: list[dict[str, Any]], expected: list[Expected]) -> None:
    assert [r["path"] for r in reports] == [str(e.path) for e in expected]
    for report, want in zip(reports, expected, strict=False):
        assert report["error"] == want.error, report["path"]
        assert report["ok"] is (want.error is None), report["path"]
        assert report["truncated"] is want.truncated, report["path"]
        assert report["parts"] == [str(want.path)]
        if want.error is None:
            assert report["format"] == "kdump"
            assert report["readable"] is True, report["reason"]


def test_both_crash_folder_layouts(crash: CrashTree) -> None:
    assert_reports(scan_as_a_user([crash.root]), crash.expected)


def test_a_symlinked_crash_folder_is_walked(crash: CrashTree, tmp_path: Path) -> None:
    link = tmp_path / "var-crash"
    link.symlink_to(crash.root)
    moved = [
        Expected(
            link / e.path.relative_to(crash.root),
            None if e.error is None else e.error.replace(str(crash.root), str(link), 1),
            e.truncated,
        )
        for e in crash.expected
    ]
    assert_reports(scan_as_a_user([link]), moved)


def test_a_folder_given_twice_is_walked_once(crash: CrashTree) -> None:
    assert_reports(scan_as_a_user([crash.root, crash.root]), crash.expected)


def test_files_named_are_always_reported(crash: CrashTree, tmp_path: Path) -> None:
    """A file named is reported even when it is text, named twice, or found in a folder
    given too; a missing path is a failed report."""
    kexec_cmd = crash.root / "kexec_cmd"
    dump = crash.root / "202401011200" / "dump.202401011200"
    missing = tmp_path / "no-such-dump"
    reports = scan_as_a_user([kexec_cmd, dump, missing, dump, crash.root])
    head = reports[:4]
    assert [r["path"] for r in head] == [str(kexec_cmd), str(dump), str(missing), str(dump)]
    assert [r["error"] for r in head] == [
        f"{kexec_cmd}: not a kernel core file",
        None,
        f"{missing}: No such file or directory",
        None,
    ]
    # The folder's walk skips the dump already named (the same file, by device and inode).
    assert_reports(reports[4:], [e for e in crash.expected if e.path != dump])


def test_text_files_are_skipped_not_counted(tmp_path: Path) -> None:
    for name, content in [
        ("dmesg.202401011200", "[    0.000000] Linux version\n"),
        ("kexec_cmd", "kexec -p\n"),
        ("utf8.log", "caf\u00e9 " * 200),
    ]:
        text(tmp_path / name, content)
    assert kvm_rs.scan([tmp_path]) == []
    assert list(kvm_rs.scan_iter([tmp_path])) == []
