"""FreeBSD libkvm's ATF cases (kvm_open_test, kvm_close_test, kvm_geterr_test), adapted to
Linux paths and to kvm_rs's two error conventions (SPEC §2-3, §10).

Each failing open runs through the Sun convention (`kvm_rs.open`, with and without errstr)
and the BSD one (`kvm_rs.openfiles`, with and without errbuf). The cores are picked so each
expected message is the one that comes out: the core is opened and its file type checked
(step 5) before the exec file is read (step 7), but its contents are validated (step 8) only
after the exec file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import elfwriter
import kvm_rs
import pytest
from synthetic import synthetic_vmcoreinfo

ERRSTR = "kvm_open"


class Files(NamedTuple):
    core: Path  # a valid synthetic core
    map: Path  # a valid System.map for it
    some_file: Path  # "this is a text file"


class Case(NamedTuple):
    execfile: Any
    corefile: Any
    message: str


CASES: dict[str, Callable[[Files], Case]] = {
    # ATF "nonexistent corefile": the core is opened first, whatever the exec file.
    "nonexistent-corefile": lambda f: Case(
        None, "/nonexistent/corefile", "/nonexistent/corefile: No such file or directory"
    ),
    # ATF "nonexistent execfile": a valid core, so the exec file is reached.
    "nonexistent-execfile": lambda f: Case(
        "/nonexistent/kernel", str(f.core), "/nonexistent/kernel: No such file or directory"
    ),
    # ATF _PATH_DEVZERO: a character device that is not the memory device (step 5).
    "devzero-corefile": lambda f: Case(None, "/dev/zero", "/dev/zero: not physical memory device"),
    # ATF "invalid corefile": a valid exec file, so the core's validation (step 8) is reached.
    "invalid-corefile": lambda f: Case(
        str(f.map), str(f.some_file), f"{f.some_file}: not a kernel core file"
    ),
    # ATF "invalid execfile": /bin/sh is a regular file (a dump, step 5) that is never
    # validated, because the exec file (step 7) fails first.
    "invalid-execfile": lambda f: Case(
        str(f.some_file), "/bin/sh", f"{f.some_file}: unrecognized symbol table format"
    ),
}


@pytest.fixture
def files(synthetic_core: Path, synthetic_map: Path, some_file: Path) -> Files:
    return Files(synthetic_core, synthetic_map, some_file)


@pytest.mark.parametrize("case", sorted(CASES))
def test_open_sun_errstr_prints_message(case: str, files: Files, capsys) -> None:
    execfile, corefile, message = CASES[case](files)
    assert kvm_rs.open(execfile, corefile, None, os.O_RDONLY, ERRSTR) is None
    out, err = capsys.readouterr()
    assert err == f"{ERRSTR}: {message}\n"
    assert out == ""


@pytest.mark.parametrize("case", sorted(CASES))
def test_open_sun_without_errstr_prints_nothing(case: str, files: Files, capsys) -> None:
    execfile, corefile, _ = CASES[case](files)
    assert kvm_rs.open(execfile, corefile, None, os.O_RDONLY, None) is None
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("case", sorted(CASES))
def test_openfiles_fills_errbuf(case: str, files: Files, capsys) -> None:
    execfile, corefile, message = CASES[case](files)
    errbuf = bytearray(kvm_rs._POSIX2_LINE_MAX)
    assert kvm_rs.openfiles(execfile, corefile, None, os.O_RDONLY, errbuf) is None
    encoded = os.fsencode(message)
    assert bytes(errbuf[: len(encoded) + 1]) == encoded + b"\0"
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("case", sorted(CASES))
def test_openfiles_without_errbuf(case: str, files: Files, capsys) -> None:
    execfile, corefile, _ = CASES[case](files)
    assert kvm_rs.openfiles(execfile, corefile, None, os.O_RDONLY, None) is None
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("case", sorted(CASES))
def test_kvm_constructor_raises_same_message(case: str, files: Files) -> None:
    execfile, corefile, message = CASES[case](files)
    with pytest.raises(kvm_rs.KvmError) as raised:
        kvm_rs.Kvm(execfile, corefile)
    assert str(raised.value) == message


# -- kvm_close_test / kvm_geterr_test ----------------------------------------------------------


def test_close_none_is_minus_one() -> None:
    assert kvm_rs.close(None) == -1


def test_geterr_none_is_empty() -> None:
    assert kvm_rs.geterr(None) == ""


@pytest.mark.parametrize("no_files", [False, True], ids=["files", "no-files"])
def test_double_close(no_files: bool, files: Files) -> None:
    if no_files:
        kd = kvm_rs.openfiles(None, None, None, kvm_rs.KVM_NO_FILES)
    else:
        kd = kvm_rs.openfiles(str(files.map), str(files.core))
    assert kd is not None
    assert kvm_rs.close(kd) == 0
    assert kvm_rs.close(kd) == -1


def test_fresh_handle_has_no_error(files: Files) -> None:
    kd = kvm_rs.openfiles(str(files.map), str(files.core))
    assert kd is not None
    assert kvm_rs.geterr(kd) == ""
    assert kd.geterr() == ""
    assert kvm_rs.close(kd) == 0


@pytest.mark.parametrize("flags", [os.O_RDONLY, kvm_rs.KVM_NO_FILES], ids=["files", "no-files"])
@pytest.mark.parametrize("size", [1, 64, 2048, 4096])
def test_errbuf_untouched_after_successful_open(flags: int, size: int, files: Files) -> None:
    errbuf = bytearray(b"x" * size)
    kd = kvm_rs.openfiles(str(files.map), str(files.core), None, flags, errbuf)
    assert kd is not None
    assert errbuf == bytearray(b"x" * size)
    assert kvm_rs.close(kd) == 0


def test_successful_sun_open_prints_nothing(files: Files, capsys) -> None:
    kd = kvm_rs.open(str(files.map), str(files.core), None, os.O_RDONLY, ERRSTR)
    assert kd is not None
    assert kvm_rs.close(kd) == 0
    assert capsys.readouterr() == ("", "")


def test_geterr_after_failed_nlist_on_no_files_handle(capsys) -> None:
    """kvm_geterr_positive_test_error: kvm_nlist on a handle with no files fails, and the
    handle's error text says why; the error is soft, so Sun's errstr does not print it."""
    kd = kvm_rs.open(None, None, None, kvm_rs.KVM_NO_FILES, ERRSTR)
    assert kd is not None
    nl = [kvm_rs.Nlist("0"), kvm_rs.Nlist(None)]
    assert kvm_rs.nlist(kd, nl) == -1
    assert kvm_rs.geterr(kd) == "bad namelist"
    assert kvm_rs.close(kd) == 0
    assert capsys.readouterr() == ("", "")


def test_bad_namelist_raised_by_kvm_nlist() -> None:
    kd = kvm_rs.openfiles(None, None, None, kvm_rs.KVM_NO_FILES)
    assert kd is not None
    with pytest.raises(kvm_rs.KvmError) as raised:
        kd.nlist(["jiffies"])
    assert str(raised.value) == "bad namelist"
    assert kd.geterr() == "bad namelist"
    kd.close()


def test_errors_are_sticky_across_successful_calls(make_file, synthetic_map: Path) -> None:
    """A failed call sets the text; later successful calls (nlist, info) leave it. The failure
    here is a read of address 0, which no segment or page table of this core translates
    (SPEC §8: -1 and the soft error `invalid address (0x0)`)."""
    core = make_file(
        "sticky.core",
        elfwriter.elf_core(
            synthetic_vmcoreinfo(), [elfwriter.Load(0xFFFF_8880_0000_0000, 0, bytes(4096))]
        ),
    )
    kd = kvm_rs.openfiles(str(synthetic_map), str(core))
    assert kd is not None
    assert kvm_rs.read(kd, 0, bytearray(8)) == -1
    assert kvm_rs.geterr(kd) == "invalid address (0x0)"
    nl = [kvm_rs.Nlist("jiffies")]
    assert kvm_rs.nlist(kd, nl) == 0
    assert kd.nlist(["_stext"]) == {"_stext": elfwriter.TEXT_ADDR}
    assert kd.info.format == "elf"
    assert kvm_rs.geterr(kd) == "invalid address (0x0)"
    assert kvm_rs.close(kd) == 0


def test_bad_namelist_text_survives_later_queries() -> None:
    """The sticky text of a KVM_NO_FILES handle outlives a successful kvm_close of another
    handle and further geterr calls: the text belongs to the handle."""
    kd = kvm_rs.openfiles(None, None, None, kvm_rs.KVM_NO_FILES)
    other = kvm_rs.openfiles(None, None, None, kvm_rs.KVM_NO_FILES)
    assert kd is not None and other is not None
    assert kvm_rs.nlist(kd, [kvm_rs.Nlist("jiffies")]) == -1
    assert kvm_rs.close(other) == 0
    assert kvm_rs.geterr(other) == ""
    assert kvm_rs.geterr(kd) == "bad namelist"
    assert kvm_rs.geterr(kd) == "bad namelist"
    assert kvm_rs.close(kd) == 0


# -- the public surface (SPEC §10) ---------------------------------------------------------------

PUBLIC_NAMES = [
    "open",
    "openfiles",
    "close",
    "geterr",
    "nlist",
    "read",
    "write",
    "Kvm",
    "KvmError",
    "Nlist",
    "KVM_NO_FILES",
    "_POSIX2_LINE_MAX",
    "PATH_MAX",
    "N_UNDF",
    "N_ABS",
    "N_TEXT",
    "N_DATA",
    "N_BSS",
    "N_EXT",
    "paths",
    "CORE_SYMBOLS",
]


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_exists(name: str) -> None:
    assert hasattr(kvm_rs, name), f"kvm_rs.{name} is missing (SPEC §10)"


def test_constants() -> None:
    assert kvm_rs.KVM_NO_FILES == 0x80000000
    assert kvm_rs._POSIX2_LINE_MAX == 2048
    assert kvm_rs.PATH_MAX == 4096
    assert (kvm_rs.N_UNDF, kvm_rs.N_EXT, kvm_rs.N_ABS) == (0x00, 0x01, 0x02)
    assert (kvm_rs.N_TEXT, kvm_rs.N_DATA, kvm_rs.N_BSS) == (0x04, 0x06, 0x08)


def test_default_paths() -> None:
    assert kvm_rs.paths._PATH_KSYMS == "/proc/kallsyms"
    assert kvm_rs.paths._PATH_MEM == "/proc/kcore"
    assert kvm_rs.paths._PATH_DEVMEM == "/dev/mem"
    release = os.uname().release
    candidates = [
        f"/usr/lib/debug/boot/vmlinux-{release}",
        f"/usr/lib/debug/lib/modules/{release}/vmlinux",
        f"/boot/vmlinux-{release}",
        f"/usr/lib/debug/boot/System.map-{release}",
        f"/boot/System.map-{release}",
    ]
    expected = next((c for c in candidates if os.path.exists(c)), candidates[0])
    assert expected == kvm_rs.paths._PATH_UNIX


def test_nlist_entry_fields() -> None:
    entry = kvm_rs.Nlist("jiffies")
    assert (entry.n_name, entry.n_type, entry.n_value) == ("jiffies", 0, 0)
    entry.n_type, entry.n_value = 5, 7
    assert (entry.n_type, entry.n_value) == (5, 7)


def test_kvm_error_is_oserror() -> None:
    assert issubclass(kvm_rs.KvmError, OSError)
