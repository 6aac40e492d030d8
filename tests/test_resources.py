"""Resources: no file descriptor or mapping outlives its handle, and a closed handle refuses
every call with a clear error instead of crashing (SPEC §2, §3, §9)."""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import kvm_rs
import pytest

if TYPE_CHECKING:
    from conftest import Corpus

KDUMP = "boot-nokaslr.mdf-d31-zlib.kdump"
CYCLES = 1000
CLOSED = "kvm handle is closed"


def mappings_of(*paths: Path) -> list[str]:
    """Lines of /proc/self/maps that map one of `paths`."""
    names = {str(p.resolve()) for p in paths}
    with open("/proc/self/maps") as maps:
        return [line for line in maps if line.split()[-1] in names]


def descriptors_of(*paths: Path) -> list[str]:
    """This process's file descriptors open on one of `paths`."""
    names = {str(p.resolve()) for p in paths}
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target in names:
            held.append(f"{fd} -> {target}")
    return held


def assert_released(before: int, fd_count: Callable[[], int], files: Files) -> None:
    """No descriptor survives its handle. Parsed exec files stay mapped in the bounded
    per-process cache (shared by later opens, holding no descriptor) until it is cleared;
    core files are unmapped as soon as their handle closes."""
    gc.collect()
    assert descriptors_of(*files.all) == []
    assert fd_count() == before
    assert mappings_of(files.dump, files.some_file) == []
    kvm_rs.clear_exec_cache()
    assert mappings_of(*files.all) == []


@dataclass
class Files:
    """Private copies of System.map, vmlinux and a kdump: no other test (nor a cache of
    earlier opens) has touched them."""

    system_map: Path
    vmlinux: Path
    dump: Path
    some_file: Path

    @property
    def all(self) -> tuple[Path, ...]:
        return (self.system_map, self.vmlinux, self.dump, self.some_file)


@pytest.fixture
def files(corpus: Corpus, tmp_path: Path, some_file: Path) -> Files:
    copies = []
    for src in (corpus.system_map, corpus.vmlinux, corpus.dump(KDUMP)):
        dst = tmp_path / src.name
        shutil.copyfile(src, dst)
        copies.append(dst)
    return Files(*copies, some_file)


def test_failed_opens_leak_nothing(files: Files, fd_count: Callable[[], int]) -> None:
    missing = str(files.some_file.parent / "no-such-vmlinux")
    before = fd_count()
    errbuf = bytearray(256)
    for i in range(CYCLES):
        if i % 2:
            # The core is opened and mapped before the exec file fails.
            assert kvm_rs.openfiles(missing, files.dump, errbuf=errbuf) is None
        else:
            # Both files are opened before the core's validation fails.
            assert kvm_rs.openfiles(files.system_map, files.some_file, errbuf=errbuf) is None
    assert_released(before, fd_count, files)


def test_raising_opens_leak_nothing(files: Files, fd_count: Callable[[], int]) -> None:
    before = fd_count()
    for _ in range(200):
        with pytest.raises(kvm_rs.KvmError):
            kvm_rs.Kvm(files.system_map, files.some_file)
    assert_released(before, fd_count, files)


def test_successful_opens_leak_nothing(files: Files, fd_count: Callable[[], int]) -> None:
    before = fd_count()
    for _ in range(CYCLES):
        kd = kvm_rs.openfiles(files.system_map, files.dump)
        assert kd is not None
        assert kvm_rs.close(kd) == 0
    assert_released(before, fd_count, files)


def test_used_handles_leak_nothing(files: Files, fd_count: Callable[[], int]) -> None:
    """Handles that built their name index and read memory release everything on close."""
    before = fd_count()
    for exec_path in (files.system_map, files.vmlinux):
        for _ in range(20):
            with kvm_rs.Kvm(exec_path, files.dump) as kd:
                assert kd.info.osrelease
                banner = kd.nlist(["linux_banner"])["linux_banner"]
                assert kd.read(banner, 14) == b"Linux version "
    assert_released(before, fd_count, files)


def test_dropped_handles_are_released(files: Files, fd_count: Callable[[], int]) -> None:
    """A handle that is never closed releases its files when it is garbage."""
    before = fd_count()
    for _ in range(50):
        kd = kvm_rs.openfiles(files.system_map, files.dump)
        assert kd is not None
        del kd
    assert_released(before, fd_count, files)


@pytest.fixture
def kd(corpus: Corpus):
    handle = kvm_rs.openfiles(corpus.system_map, corpus.dump(KDUMP))
    assert handle is not None
    yield handle
    kvm_rs.close(handle)


@pytest.mark.parametrize("info_first", [False, True], ids=["fresh", "info-seen"])
def test_closed_handle_refuses_info(kd: kvm_rs.Kvm, info_first: bool) -> None:
    if info_first:
        assert kd.info.format == "kdump"
    assert kvm_rs.close(kd) == 0
    with pytest.raises(kvm_rs.KvmError) as raised:
        kd.info  # noqa: B018
    assert str(raised.value) == CLOSED


def test_closed_handle_refuses_nlist(kd: kvm_rs.Kvm) -> None:
    assert kd.nlist(["jiffies"])
    kd.close()
    with pytest.raises(kvm_rs.KvmError) as raised:
        kd.nlist(["jiffies"])
    assert str(raised.value) == CLOSED
    assert kd.geterr() == CLOSED


def test_closed_handle_c_style(kd: kvm_rs.Kvm) -> None:
    assert kvm_rs.close(kd) == 0
    nl = [kvm_rs.Nlist("jiffies", n_type=9, n_value=9)]
    assert kvm_rs.nlist(kd, nl) == -1
    assert kvm_rs.geterr(kd) == CLOSED
    assert kvm_rs.read(kd, 0xFFFF_FFFF_8216_1900, bytearray(16)) == -1
    assert kvm_rs.geterr(kd) == CLOSED
    assert kvm_rs.close(kd) == -1


def test_closed_handle_refuses_read(kd: kvm_rs.Kvm) -> None:
    kd.close()
    with pytest.raises(kvm_rs.KvmError) as raised:
        kd.read(0xFFFF_FFFF_8216_1900, 16)
    assert str(raised.value) == CLOSED


def test_with_statement_closes(files: Files, fd_count: Callable[[], int]) -> None:
    before = fd_count()
    with kvm_rs.Kvm(files.system_map, files.dump) as kd:
        assert isinstance(kd, kvm_rs.Kvm)
        assert not kd.closed
        assert descriptors_of(files.dump) != []
    assert kd.closed
    assert_released(before, fd_count, files)
    assert kvm_rs.close(kd) == -1


def test_with_statement_closes_on_exception(corpus: Corpus) -> None:
    with pytest.raises(RuntimeError), kvm_rs.Kvm(corpus.system_map, corpus.dump(KDUMP)) as kd:
        raise RuntimeError("inside the block")
    assert kd.closed


def test_close_twice_is_fine(kd: kvm_rs.Kvm) -> None:
    kd.close()
    kd.close()
    assert kd.closed
    assert kvm_rs.close(kd) == -1
    assert kvm_rs.close(kd) == -1


def test_no_files_handle_closes(fd_count: Callable[[], int]) -> None:
    before = fd_count()
    for _ in range(100):
        kd = kvm_rs.openfiles(None, None, None, kvm_rs.KVM_NO_FILES)
        assert kd is not None
        assert kvm_rs.close(kd) == 0
    assert fd_count() == before
