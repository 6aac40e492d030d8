"""Every message of SPEC §2-§7, asserted whole, through both error conventions.

The files are synthetic (tests/elfwriter.py, tests/synthetic.py), so these tests need no
corpus. Each failing open is checked three ways: `Kvm(...)` raises KvmError with the message,
`openfiles` fills errbuf with it, and `open` with errstr prints it.
"""

from __future__ import annotations

import array
import errno
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import elfwriter
import kvm_rs
import pytest
from elfwriter import Load, Symbol
from synthetic import SYMBOLS, TEST_RELEASE, TEXT_ADDR, synthetic_vmcoreinfo

ERRSTR = "prog"
NOWHERE = "/nonexistent/kvm-rs-test"
DIRECT_MAP = 0xFFFF_8880_0000_0000


def open_error(execfile: Any, corefile: Any, swapfile: Any = None, flags: int = os.O_RDONLY):
    """Opens three ways; asserts all fail alike, and returns the KvmError from `Kvm`."""
    with pytest.raises(kvm_rs.KvmError) as raised:
        kvm_rs.Kvm(execfile, corefile, swapfile, flags)
    message = raised.value.message
    assert str(raised.value) == message
    errbuf = bytearray(b"\xaa" * kvm_rs._POSIX2_LINE_MAX)
    assert kvm_rs.openfiles(execfile, corefile, swapfile, flags, errbuf) is None
    encoded = os.fsencode(message)
    assert bytes(errbuf[: errbuf.index(0)]) == encoded[: kvm_rs._POSIX2_LINE_MAX - 1]
    return raised.value


def assert_open_fails(
    expected: str, execfile: Any, corefile: Any, swapfile: Any = None, flags: int = os.O_RDONLY
) -> kvm_rs.KvmError:
    error = open_error(execfile, corefile, swapfile, flags)
    assert error.message == expected
    return error


def assert_sun_prints(capsys, expected: str, execfile: Any, corefile: Any, **kwargs: Any) -> None:
    capsys.readouterr()
    assert kvm_rs.open(execfile, corefile, errstr=ERRSTR, **kwargs) is None
    assert capsys.readouterr().err == f"{ERRSTR}: {expected}\n"


def core_bytes(vmcoreinfo: bytes | None = None, **kwargs: Any) -> bytes:
    if vmcoreinfo is None:
        vmcoreinfo = synthetic_vmcoreinfo()
    return elfwriter.elf_core(vmcoreinfo, [Load(DIRECT_MAP, 0, b"\xaa" * 4096)], **kwargs)


def banner(release: str) -> bytes:
    return f"Linux version {release} (builder@example) #1 SMP\n\0".encode()


def kernel_image(
    *,
    release: str = TEST_RELEASE,
    build_id: bytes | None = None,
    e_machine: int = elfwriter.EM_X86_64,
    bits: int = 64,
    little_endian: bool = True,
    with_symtab: bool = True,
    text_addr: int | None = None,
) -> bytes:
    """An ELF image of the synthetic kernel, with `linux_banner` in .rodata."""
    if text_addr is None:
        text_addr = TEXT_ADDR if bits == 64 else 0xC100_0000
    sections = elfwriter.kernel_sections(
        text_addr=text_addr,
        rodata=banner(release),
        build_id=build_id,
        little_endian=little_endian,
    )
    base = text_addr
    symbols = [
        Symbol("_text", base),
        Symbol("_stext", base, type=elfwriter.STT_FUNC),
        Symbol("local_func", base + 0x40, binding=elfwriter.STB_LOCAL, type=elfwriter.STT_FUNC),
        Symbol("linux_banner", base + 0x10_0000, ".rodata", type=elfwriter.STT_OBJECT),
        Symbol("jiffies", base + 0x20_0000, ".data", type=elfwriter.STT_OBJECT),
        Symbol(
            "local_data",
            base + 0x20_0008,
            ".data",
            binding=elfwriter.STB_LOCAL,
            type=elfwriter.STT_OBJECT,
        ),
        Symbol("mem_section", base + 0x30_0000, ".bss", type=elfwriter.STT_OBJECT),
        Symbol("local_bss", base + 0x30_0010, ".bss", binding=elfwriter.STB_LOCAL),
        Symbol("kexec_control_code_size", 0x1EA, "ABS"),
        Symbol("_end", base + 0x40_0000, ".bss"),
    ]
    return elfwriter.elf_exec(
        symbols,
        bits=bits,
        little_endian=little_endian,
        e_machine=e_machine,
        sections=sections,
        with_symtab=with_symtab,
    )


@pytest.fixture
def core(synthetic_core: Path) -> str:
    return str(synthetic_core)


@pytest.fixture
def sysmap(synthetic_map: Path) -> str:
    return str(synthetic_map)


@pytest.fixture
def patched_paths(monkeypatch, tmp_path: Path) -> Iterator[None]:
    """Default paths that exist nowhere, so no test reaches this machine's kernel."""
    monkeypatch.setattr(kvm_rs.paths, "_PATH_KSYMS", str(tmp_path / "no-kallsyms"))
    monkeypatch.setattr(kvm_rs.paths, "_PATH_UNIX", str(tmp_path / "no-vmlinux"))
    monkeypatch.setattr(kvm_rs.paths, "_PATH_MEM", str(tmp_path / "no-kcore"))
    monkeypatch.setattr(kvm_rs.paths, "_PATH_DEVMEM", str(tmp_path / "no-mem"))
    yield


# -- step 1: KVM_NO_FILES ---------------------------------------------------------------------

NO_FILES_FLAGS = {
    "KVM_NO_FILES": 0x8000_0000,
    "KVM_NO_FILES|O_RDWR": 0x8000_0000 | os.O_RDWR,
    "KVM_NO_FILES|O_CREAT": 0x8000_0000 | os.O_CREAT,
    "minus-1": -1,
    "minus-2": -2,
    "minus-2**31": -(2**31),
    "minus-2**63": -(2**63),
    "minus-2**100": -(2**100),
    "2**70|KVM_NO_FILES": 2**70 | 0x8000_0000,
}


@pytest.mark.parametrize("flags", NO_FILES_FLAGS.values(), ids=NO_FILES_FLAGS.keys())
def test_no_files_checks_nothing(flags: int, capsys) -> None:
    too_long = "x" * 5000
    for execfile, corefile in [(NOWHERE, NOWHERE), (too_long, NOWHERE), (None, None)]:
        errbuf = bytearray(b"x" * 64)
        kd = kvm_rs.openfiles(execfile, corefile, NOWHERE, flags, errbuf)
        assert kd is not None
        assert errbuf == bytearray(b"x" * 64)
        assert kvm_rs.geterr(kd) == ""
        assert kvm_rs.close(kd) == 0
        kd = kvm_rs.open(execfile, corefile, NOWHERE, flags, ERRSTR)
        assert kd is not None
        assert kvm_rs.close(kd) == 0
        with kvm_rs.Kvm(execfile, corefile, NOWHERE, flags) as kd:
            assert kd.geterr() == ""
    assert capsys.readouterr() == ("", "")


# -- step 2: exec file name too long ------------------------------------------------------------

TOO_LONG = {
    "str-4096": "x" * 4096,
    "bytes-4096": b"x" * 4096,
    "str-5000": "x" * 5000,
    "utf8-2048-chars-4096-bytes": "\u00e9" * 2048,
}


@pytest.mark.parametrize("execfile", TOO_LONG.values(), ids=TOO_LONG.keys())
def test_exec_name_too_long_comes_before_bad_flags(execfile: Any, capsys) -> None:
    assert_open_fails("exec file name too long", execfile, NOWHERE, flags=99)
    assert_sun_prints(capsys, "exec file name too long", execfile, NOWHERE, flags=99)


def test_exec_name_of_4095_bytes_is_not_too_long() -> None:
    assert_open_fails("bad flags arg", "x" * 4095, NOWHERE, flags=99)


def test_exec_name_too_long_with_good_flags() -> None:
    assert_open_fails("exec file name too long", "/" * 4096, NOWHERE)


# -- step 3: bad flags ----------------------------------------------------------------------------

BAD_FLAGS = {
    "O_ACCMODE": 3,
    "O_RDONLY|O_CREAT": os.O_RDONLY | os.O_CREAT,
    "O_RDONLY|O_CLOEXEC": os.O_RDONLY | os.O_CLOEXEC,
    "O_RDWR|O_TRUNC": os.O_RDWR | os.O_TRUNC,
    "O_WRONLY|O_APPEND": os.O_WRONLY | os.O_APPEND,
    "99": 99,
    "0x7fffffff": 0x7FFF_FFFF,
    "2**40": 2**40,
    "2**70": 2**70,
}


@pytest.mark.parametrize("flags", BAD_FLAGS.values(), ids=BAD_FLAGS.keys())
def test_bad_flags_before_missing_core(flags: int, capsys) -> None:
    assert_open_fails("bad flags arg", NOWHERE, NOWHERE, flags=flags)
    assert_sun_prints(capsys, "bad flags arg", NOWHERE, NOWHERE, flags=flags)


@pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_WRONLY, os.O_RDWR], ids=["r", "w", "rw"])
def test_good_flags_open(flags: int, sysmap: str, core: str) -> None:
    before = Path(core).read_bytes()
    with kvm_rs.Kvm(sysmap, core, None, flags) as kd:
        assert kd.info.osrelease == TEST_RELEASE
    assert Path(core).read_bytes() == before


# -- step 4: the core file is opened ----------------------------------------------------------


def test_core_enoent(sysmap: str, capsys) -> None:
    error = assert_open_fails(f"{NOWHERE}: No such file or directory", sysmap, NOWHERE)
    assert isinstance(error, FileNotFoundError)
    assert isinstance(error, OSError)
    assert error.errno == errno.ENOENT
    assert error.filename == NOWHERE
    assert_sun_prints(capsys, f"{NOWHERE}: No such file or directory", sysmap, NOWHERE)


def test_core_enotdir(sysmap: str, some_file: Path) -> None:
    path = f"{some_file}/core"
    error = assert_open_fails(f"{path}: {os.strerror(errno.ENOTDIR)}", sysmap, path)
    assert isinstance(error, NotADirectoryError)
    assert error.errno == errno.ENOTDIR
    assert error.filename == path


def test_core_enametoolong(sysmap: str) -> None:
    path = "/" + "a" * 300
    error = assert_open_fails(f"{path}: {os.strerror(errno.ENAMETOOLONG)}", sysmap, path)
    assert error.errno == errno.ENAMETOOLONG


def test_core_eisdir_when_opened_for_writing(sysmap: str, tmp_path: Path) -> None:
    error = assert_open_fails(
        f"{tmp_path}: {os.strerror(errno.EISDIR)}", sysmap, str(tmp_path), flags=os.O_RDWR
    )
    assert isinstance(error, IsADirectoryError)


def test_core_eloop(sysmap: str, tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    error = assert_open_fails(f"{loop}: {os.strerror(errno.ELOOP)}", sysmap, str(loop))
    assert error.errno == errno.ELOOP


def test_core_bytes_and_pathlike_paths(synthetic_map: Path, synthetic_core: Path) -> None:
    for execfile, corefile in [
        (synthetic_map, synthetic_core),
        (os.fsencode(synthetic_map), os.fsencode(synthetic_core)),
    ]:
        with kvm_rs.Kvm(execfile, corefile) as kd:
            assert kd.info.format == "elf"


# -- step 5: the core file's type ----------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_char_device_that_is_not_devmem(device: str, patched_paths, capsys) -> None:
    # Step 5 comes before the exec file (step 7): a missing exec file is not reached.
    assert_open_fails(f"{device}: not physical memory device", NOWHERE, device)
    assert_sun_prints(capsys, f"{device}: not physical memory device", NOWHERE, device)


def test_core_directory(sysmap: str, tmp_path: Path) -> None:
    # Type checks come before the exec file: a missing exec file is not reached.
    assert_open_fails(f"{tmp_path}: not a kernel core file", NOWHERE, str(tmp_path))


class FifoRescue:
    """Unblocks an open(2) stuck on a FIFO with no writer: after `after` seconds, opens and
    closes the write end, so the test fails instead of hanging."""

    def __init__(self, fifo: Path, after: float = 3.0) -> None:
        self.fifo = fifo
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(after,), daemon=True)

    def _run(self, after: float) -> None:
        if self._done.wait(after):
            return
        self.fired = True
        deadline = time.monotonic() + 10
        while not self._done.is_set() and time.monotonic() < deadline:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
                continue
            os.close(fd)
            time.sleep(0.05)

    def __enter__(self) -> FifoRescue:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def test_core_fifo_does_not_hang(sysmap: str, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with FifoRescue(fifo) as rescue, pytest.raises(kvm_rs.KvmError) as raised:
        kvm_rs.Kvm(NOWHERE, str(fifo))
    assert not rescue.fired, "opening a FIFO as the core file blocked"
    assert str(raised.value) == f"{fifo}: not a kernel core file"
    errbuf = bytearray(256)
    with FifoRescue(fifo) as rescue:
        assert kvm_rs.openfiles(sysmap, str(fifo), errbuf=errbuf) is None
    assert not rescue.fired
    assert bytes(errbuf).split(b"\0")[0] == os.fsencode(f"{fifo}: not a kernel core file")


def test_core_socket(sysmap: str, tmp_path: Path) -> None:
    path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        assert_open_fails(f"{path}: not a kernel core file", NOWHERE, str(path))
    finally:
        sock.close()


def test_devmem_is_compared_by_device(monkeypatch, sysmap: str, tmp_path: Path) -> None:
    """`_PATH_DEVMEM` is read at call time and compared as a device, not as a string: a
    symlink to the device counts, and so does the device reached through another name."""
    link = tmp_path / "mem-link"
    link.symlink_to("/dev/zero")
    monkeypatch.setattr(kvm_rs.paths, "_PATH_DEVMEM", str(link))
    with kvm_rs.Kvm(sysmap, "/dev/zero") as kd:
        assert kd.info.format == "devmem"
        assert kd.info.live is True
    core_link = tmp_path / "core-link"
    core_link.symlink_to("/dev/zero")
    with kvm_rs.Kvm(sysmap, str(core_link)) as kd:
        assert kd.info.live is True
    assert_open_fails("/dev/null: not physical memory device", sysmap, "/dev/null")
    monkeypatch.setattr(kvm_rs.paths, "_PATH_DEVMEM", str(tmp_path / "missing"))
    assert_open_fails("/dev/zero: not physical memory device", sysmap, "/dev/zero")


# -- step 6: the swap file (live kernels only) --------------------------------------------------


def test_swapfile_of_live_kernel_is_opened(monkeypatch, sysmap: str) -> None:
    monkeypatch.setattr(kvm_rs.paths, "_PATH_DEVMEM", "/dev/zero")
    swap = "/nonexistent/swap"
    error = assert_open_fails(f"{swap}: No such file or directory", sysmap, "/dev/zero", swap)
    assert error.filename == swap
    # Step 6 comes before the exec file (step 7).
    assert_open_fails(f"{swap}: No such file or directory", NOWHERE, "/dev/zero", swap)
    with kvm_rs.Kvm(sysmap, "/dev/zero", "/dev/null") as kd:
        assert kd.info.live is True


def test_swapfile_of_dump_is_ignored(sysmap: str, core: str) -> None:
    with kvm_rs.Kvm(sysmap, core, "/nonexistent/swap") as kd:
        assert kd.info.live is False


# -- step 7: the exec file ------------------------------------------------------------------------


def test_exec_enoent(core: str, capsys) -> None:
    error = assert_open_fails(f"{NOWHERE}: No such file or directory", NOWHERE, core)
    assert isinstance(error, FileNotFoundError)
    assert error.filename == NOWHERE
    assert_sun_prints(capsys, f"{NOWHERE}: No such file or directory", NOWHERE, core)


def test_exec_directory(core: str, tmp_path: Path) -> None:
    assert_open_fails(f"{tmp_path}: {os.strerror(errno.EISDIR)}", str(tmp_path), core)


def test_exec_fifo_does_not_hang(core: str, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with FifoRescue(fifo) as rescue, pytest.raises(kvm_rs.KvmError) as raised:
        kvm_rs.Kvm(str(fifo), core)
    assert not rescue.fired, "opening a FIFO as the exec file blocked"
    assert str(raised.value).startswith(f"{fifo}: ")


def test_default_exec_names_path_unix(monkeypatch, patched_paths, core: str, tmp_path) -> None:
    """execfile None and no `_PATH_KSYMS`: the exec file is `_PATH_UNIX`, read at call time."""
    unix = str(tmp_path / "vmlinux-elsewhere")
    monkeypatch.setattr(kvm_rs.paths, "_PATH_UNIX", unix)
    assert_open_fails(f"{unix}: No such file or directory", None, core)


def test_default_exec_is_path_unix(monkeypatch, patched_paths, core: str, sysmap: str) -> None:
    monkeypatch.setattr(kvm_rs.paths, "_PATH_UNIX", sysmap)
    with kvm_rs.Kvm(None, core) as kd:
        assert kd.info.exec_format == "system.map"
        assert kd.nlist(["jiffies"]) == {"jiffies": TEXT_ADDR + 0x20_0000}


def test_default_exec_prefers_path_ksyms(monkeypatch, patched_paths, core, make_file) -> None:
    kallsyms = make_file(
        "kallsyms",
        elfwriter.system_map([*SYMBOLS, (0xFFFF_FFFF_C000_0000, "t", "mod_fn", "mod")]),
    )
    monkeypatch.setattr(kvm_rs.paths, "_PATH_KSYMS", str(kallsyms))
    with kvm_rs.Kvm(None, core) as kd:
        assert kd.info.exec_format == "kallsyms"
        assert kd.nlist(["mod_fn"]) == {"mod_fn": 0xFFFF_FFFF_C000_0000}


def test_default_core_is_path_mem(monkeypatch, patched_paths, sysmap: str, core: str) -> None:
    """corefile None opens `_PATH_MEM`, read at call time."""
    assert_open_fails(f"{kvm_rs.paths._PATH_MEM}: No such file or directory", sysmap, None)
    monkeypatch.setattr(kvm_rs.paths, "_PATH_MEM", core)
    with kvm_rs.Kvm(sysmap, None) as kd:
        assert kd.info.osrelease == TEST_RELEASE
        assert kd.info.live is False


def test_exec_empty(core: str, make_file, capsys) -> None:
    path = make_file("empty-exec", b"")
    assert_open_fails(f"{path}: empty file", str(path), core)
    assert_sun_prints(capsys, f"{path}: empty file", str(path), core)


EXEC_UNRECOGNIZED = {
    "text": b"this is a text file",
    "binary": bytes(range(256)) * 4,
    "blank-lines": b"\n\n\n",
    "address-too-wide": b"1ffffffff81000000 T _stext\n",
    "elf-magic-only": b"\x7fELF",
}


@pytest.mark.parametrize("data", EXEC_UNRECOGNIZED.values(), ids=EXEC_UNRECOGNIZED.keys())
def test_exec_unrecognized(data: bytes, core: str, make_file) -> None:
    path = make_file("exec", data)
    assert_open_fails(f"{path}: unrecognized symbol table format", str(path), core)


@pytest.mark.parametrize("bits", [64, 32])
def test_exec_stripped_elf(bits: int, core: str, make_file, capsys) -> None:
    path = make_file("vmlinux-stripped", kernel_image(bits=bits, with_symtab=False))
    assert_open_fails(f"{path}: no symbol table", str(path), core)
    assert_sun_prints(capsys, f"{path}: no symbol table", str(path), core)


def test_exec_kallsyms_hidden(core: str, make_file) -> None:
    hidden = [(0, letter, name) for _, letter, name in SYMBOLS]
    hidden.append((0, "t", "mod_fn", "mod"))
    path = make_file("kallsyms", elfwriter.system_map(hidden))
    assert_open_fails(f"{path}: symbol addresses are hidden (kptr_restrict)", str(path), core)


def test_exec_detected_by_content_not_name(core: str, make_file) -> None:
    as_vmlinux = make_file("vmlinux", elfwriter.system_map(SYMBOLS))
    with kvm_rs.Kvm(str(as_vmlinux), core) as kd:
        assert kd.info.exec_format == "system.map"
    as_map = make_file("System.map", kernel_image())
    with kvm_rs.Kvm(str(as_map), core) as kd:
        assert kd.info.exec_format == "elf"


@pytest.mark.parametrize(
    ("bits", "little_endian", "machine"),
    [
        (64, True, elfwriter.EM_X86_64),
        (64, False, elfwriter.EM_PPC64),
        (32, True, elfwriter.EM_386),
        (32, False, elfwriter.EM_PPC),
    ],
    ids=["elf64-le", "elf64-be", "elf32-le", "elf32-be"],
)
def test_elf_exec_and_core_of_each_class_and_order(
    bits: int, little_endian: bool, machine: int, make_file
) -> None:
    text = TEXT_ADDR if bits == 64 else 0xC100_0000
    vmcoreinfo = synthetic_vmcoreinfo({"SYMBOL(_stext)": f"{text:x}"})
    direct = DIRECT_MAP if bits == 64 else 0xC000_0000
    core = make_file(
        "core",
        elfwriter.elf_core(
            vmcoreinfo,
            [Load(direct, 0, b"\xaa" * 4096)],
            bits=bits,
            little_endian=little_endian,
            e_machine=machine,
        ),
    )
    image = kernel_image(bits=bits, little_endian=little_endian, e_machine=machine, text_addr=text)
    exec_path = make_file("vmlinux", image)
    with kvm_rs.Kvm(str(exec_path), str(core)) as kd:
        info = kd.info
        assert (info.format, info.exec_format, info.osrelease) == ("elf", "elf", TEST_RELEASE)
        assert info.machine == {3: "i386", 20: "ppc", 21: "ppc64", 62: "x86_64"}[machine]
        assert info.vmcoreinfo["OSRELEASE"] == TEST_RELEASE
        assert kd.nlist(["jiffies", "_stext"]) == {"jiffies": text + 0x20_0000, "_stext": text}


# -- step 8: the core file's contents -----------------------------------------------------------


def test_core_empty(sysmap: str, make_file, capsys) -> None:
    path = make_file("empty-core", b"")
    assert_open_fails(f"{path}: empty file", sysmap, str(path))
    assert_sun_prints(capsys, f"{path}: empty file", sysmap, str(path))


CORE_NOT_CORE = {
    "text": b"this is a text file",
    "zeros": bytes(8192),
    "almost-elf": b"\x7fELG" + bytes(60),
    "almost-kdump": b"KDUMP  X" + bytes(4096),
    "one-byte": b"\x7f",
}


@pytest.mark.parametrize("data", CORE_NOT_CORE.values(), ids=CORE_NOT_CORE.keys())
def test_core_not_a_core(data: bytes, sysmap: str, make_file) -> None:
    path = make_file("core", data)
    assert_open_fails(f"{path}: not a kernel core file", sysmap, str(path))


def test_core_text_after_exec(sysmap: str, make_file) -> None:
    """The core is validated after the exec file: a bad exec file is reported first."""
    core = make_file("core", b"this is a text file")
    exec_path = make_file("exec", b"this is a text file too")
    assert_open_fails(f"{exec_path}: unrecognized symbol table format", str(exec_path), str(core))


INVALID_CORES = {
    "ET_EXEC": (dict(e_type=elfwriter.ET_EXEC), "ELF type ET_EXEC, not ET_CORE"),
    "ET_DYN": (dict(e_type=elfwriter.ET_DYN), "ELF type ET_DYN, not ET_CORE"),
    "ET_REL": (dict(e_type=1), "ELF type ET_REL, not ET_CORE"),
    "class-0": (dict(ei_class=0), "ELF class 0"),
    "class-3": (dict(ei_class=3), "ELF class 3"),
    "byte-order-0": (dict(ei_data=0), "ELF byte order 0"),
    "byte-order-3": (dict(ei_data=3), "ELF byte order 3"),
    "machine-0x1234": (dict(e_machine=0x1234), "unsupported machine 4660"),
}


@pytest.mark.parametrize("case", INVALID_CORES.values(), ids=INVALID_CORES.keys())
def test_core_invalid(case: tuple[dict, str], sysmap: str, make_file, capsys) -> None:
    kwargs, what = case
    path = make_file("core", core_bytes(**kwargs))
    assert_open_fails(f"{path}: invalid core: {what}", sysmap, str(path))
    assert_sun_prints(capsys, f"{path}: invalid core: {what}", sysmap, str(path))


PATCHED_CORES = {
    "phentsize": (dict(e_phentsize=55), "e_phentsize 55"),
    "phnum-0": (dict(e_phnum=0), "no program headers"),
}


@pytest.mark.parametrize("case", PATCHED_CORES.values(), ids=PATCHED_CORES.keys())
def test_core_invalid_header_field(case: tuple[dict, str], sysmap: str, make_file) -> None:
    fields, what = case
    path = make_file("core", elfwriter.patch_ehdr(core_bytes(), **fields))
    assert_open_fails(f"{path}: invalid core: {what}", sysmap, str(path))


def test_core_filesz_above_memsz(sysmap: str, make_file) -> None:
    image = elfwriter.elf_core(
        synthetic_vmcoreinfo(), [Load(DIRECT_MAP, 0, b"\xaa" * 4096, memsz=16)]
    )
    path = make_file("core", image)
    expected = f"{path}: invalid core: program header 1: p_filesz > p_memsz"
    assert_open_fails(expected, sysmap, str(path))


def test_core_malformed_note(sysmap: str, make_file) -> None:
    image, layout = elfwriter.elf_core_with_layout(synthetic_vmcoreinfo(), [])
    patched = bytearray(image)
    patched[layout.notes_offset : layout.notes_offset + 4] = (0x7FFF_FFFF).to_bytes(4, "little")
    path = make_file("core", bytes(patched))
    assert_open_fails(f"{path}: invalid core: malformed note", sysmap, str(path))


def truncations() -> dict[str, tuple[int, str]]:
    """Cut points of the synthetic core, and what is cut short there."""
    _, layout = elfwriter.elf_core_with_layout(
        synthetic_vmcoreinfo(), [Load(DIRECT_MAP, 0, bytes(4096))]
    )
    return {
        "magic-only": (4, "ELF header"),
        "inside-e_ident": (10, "ELF header"),
        "inside-ehdr": (40, "ELF header"),
        "ehdr-minus-1": (63, "ELF header"),
        "at-phoff": (layout.phoff, "program headers"),
        "inside-phdrs": (layout.phoff + 60, "program headers"),
        "at-notes": (layout.notes_offset, "notes"),
        "inside-notes": (layout.notes_offset + 20, "notes"),
    }


@pytest.mark.parametrize("cut", truncations().values(), ids=truncations().keys())
def test_core_truncated_headers(cut: tuple[int, str], sysmap: str, make_file) -> None:
    size, what = cut
    image = core_bytes()
    path = make_file("core", image[:size])
    assert_open_fails(f"{path}: truncated core: {what}", sysmap, str(path))


def test_core_truncated_data_opens(sysmap: str, make_file) -> None:
    image, layout = elfwriter.elf_core_with_layout(
        synthetic_vmcoreinfo(), [Load(DIRECT_MAP, 0, bytes(8192))]
    )
    path = make_file("core", image[: layout.data_offset + 100])
    with kvm_rs.Kvm(sysmap, str(path)) as kd:
        assert kd.info.truncated is True
    whole = make_file("whole", image)
    with kvm_rs.Kvm(sysmap, str(whole)) as kd:
        assert kd.info.truncated is False


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"makedumpfile\0\0\0\0" + bytes(4), "truncated core: flattened header"),
        (b"KDUMP   " + (6).to_bytes(4, "little") + bytes(20), "truncated core: disk_dump_header"),
    ],
    ids=["flattened", "kdump"],
)
def test_core_signature_then_nothing(data: bytes, what: str, sysmap: str, make_file) -> None:
    path = make_file("core", data)
    assert_open_fails(f"{path}: {what}", sysmap, str(path))


# -- step 8: exec and core must match (SPEC §6) -------------------------------------------------

BUILD_ID = bytes(range(20))


def test_mismatch_machine(make_file) -> None:
    exec_path = make_file("vmlinux", kernel_image(e_machine=elfwriter.EM_AARCH64))
    core = make_file("core", core_bytes())
    expected = f"{exec_path}: does not match {core} (machine: aarch64 != x86_64)"
    assert_open_fails(expected, str(exec_path), str(core))


def test_mismatch_build_id(make_file, capsys) -> None:
    exec_path = make_file("vmlinux", kernel_image(build_id=BUILD_ID))
    other = "ff" * 20
    core = make_file("core", core_bytes(synthetic_vmcoreinfo({"BUILD-ID": other})))
    expected = f"{exec_path}: does not match {core} (build-id: {BUILD_ID.hex()} != {other})"
    assert_open_fails(expected, str(exec_path), str(core))
    assert_sun_prints(capsys, expected, str(exec_path), str(core))


def test_matching_build_id_opens(make_file) -> None:
    exec_path = make_file("vmlinux", kernel_image(build_id=BUILD_ID))
    core = make_file("core", core_bytes(synthetic_vmcoreinfo({"BUILD-ID": BUILD_ID.hex()})))
    with kvm_rs.Kvm(str(exec_path), str(core)) as kd:
        assert kd.info.build_id == BUILD_ID.hex()


GARBAGE_BUILD_ID = ["6.1.113", "6.1.118", "6.6.55", "6.6.62", "6.10.14", "6.10.30"]
GARBAGE_BUILD_ID += ["6.11.3", "6.11.9", "5.15.168", "5.15.190"]
TRUSTED_BUILD_ID = ["6.1.112", "6.1.119", "6.6.54", "6.6.63", "6.10.13", "6.11.2"]
TRUSTED_BUILD_ID += ["6.11.10", "5.15.167", "6.12.0"]


@pytest.mark.parametrize("release", GARBAGE_BUILD_ID)
def test_build_id_not_compared_for_garbage_releases(release: str, make_file) -> None:
    exec_path = make_file("vmlinux", kernel_image(build_id=BUILD_ID, release=release))
    vmcoreinfo = synthetic_vmcoreinfo({"OSRELEASE": release, "BUILD-ID": "ab" * 20})
    core = make_file("core", core_bytes(vmcoreinfo))
    with kvm_rs.Kvm(str(exec_path), str(core)) as kd:
        assert kd.info.osrelease == release


@pytest.mark.parametrize("release", TRUSTED_BUILD_ID)
def test_build_id_compared_for_other_releases(release: str, make_file) -> None:
    exec_path = make_file("vmlinux", kernel_image(build_id=BUILD_ID, release=release))
    vmcoreinfo = synthetic_vmcoreinfo({"OSRELEASE": release, "BUILD-ID": "ab" * 20})
    core = make_file("core", core_bytes(vmcoreinfo))
    expected = f"{exec_path}: does not match {core} (build-id: {BUILD_ID.hex()} != {'ab' * 20})"
    assert_open_fails(expected, str(exec_path), str(core))


def test_mismatch_release(make_file) -> None:
    exec_path = make_file("vmlinux", kernel_image(release="6.1.0-other"))
    core = make_file("core", core_bytes())
    expected = f"{exec_path}: does not match {core} (release: 6.1.0-other != {TEST_RELEASE})"
    assert_open_fails(expected, str(exec_path), str(core))


def test_mismatch_symbol_system_map(sysmap: str, make_file) -> None:
    moved = TEXT_ADDR + 0x20_1000
    core = make_file("core", core_bytes(synthetic_vmcoreinfo({"SYMBOL(jiffies)": f"{moved:x}"})))
    jiffies = TEXT_ADDR + 0x20_0000
    expected = f"{sysmap}: does not match {core} (SYMBOL(jiffies): {jiffies:#x} != {moved:#x})"
    assert_open_fails(expected, sysmap, str(core))


def test_mismatch_symbol_kallsyms(make_file) -> None:
    kallsyms = make_file(
        "kallsyms", elfwriter.system_map([*SYMBOLS, (0xFFFF_FFFF_C000_0000, "t", "f", "mod")])
    )
    stext = TEXT_ADDR + 0x1000_0000
    core = make_file("core", core_bytes(synthetic_vmcoreinfo({"SYMBOL(_stext)": f"{stext:x}"})))
    expected = f"{kallsyms}: does not match {core} (SYMBOL(_stext): {TEXT_ADDR:#x} != {stext:#x})"
    assert_open_fails(expected, str(kallsyms), str(core))


def test_symbols_outside_the_image_are_not_compared(sysmap: str, make_file) -> None:
    """SYMBOL(mem_section) is a heap address; node_online_map and swapper_pg_dir are macros
    the exec file does not define: none of them is compared."""
    vmcoreinfo = synthetic_vmcoreinfo(
        {
            "SYMBOL(mem_section)": "ffff888012345000",
            "SYMBOL(swapper_pg_dir)": f"{TEXT_ADDR + 0x80_0000:x}",
            "SYMBOL(node_online_map)": f"{TEXT_ADDR + 0x90_0000:x}",
        }
    )
    core = make_file("core", core_bytes(vmcoreinfo))
    with kvm_rs.Kvm(sysmap, str(core)) as kd:
        assert kd.nlist(["mem_section"]) == {"mem_section": TEXT_ADDR + 0x30_0000}


KASLR = 0x2740_0000


@pytest.mark.parametrize("offset_key", [True, False], ids=["KERNELOFFSET", "derived"])
def test_kaslr_relocation(offset_key: bool, sysmap: str, make_file) -> None:
    """KERNELOFFSET (or SYMBOL(_stext) minus the exec's _stext) moves every link-time symbol
    inside [_text, _end); an absolute symbol outside the image stays."""
    vmcoreinfo = synthetic_vmcoreinfo(
        {
            "SYMBOL(_stext)": f"{TEXT_ADDR + KASLR:x}",
            "KERNELOFFSET": f"{KASLR:x}" if offset_key else None,
        }
    )
    core = make_file("core", core_bytes(vmcoreinfo))
    with kvm_rs.Kvm(sysmap, str(core)) as kd:
        assert kd.info.kernel_offset == KASLR
        found = kd.nlist(["_stext", "jiffies", "local_bss", "kexec_control_code_size"])
    assert found == {
        "_stext": TEXT_ADDR + KASLR,
        "jiffies": TEXT_ADDR + 0x20_0000 + KASLR,
        "local_bss": TEXT_ADDR + 0x30_0010 + KASLR,
        "kexec_control_code_size": 0x1EA,
    }


def test_kallsyms_values_are_never_relocated(make_file) -> None:
    runtime = [(value + KASLR if value >= TEXT_ADDR else value, t, n) for value, t, n in SYMBOLS]
    kallsyms = make_file(
        "kallsyms", elfwriter.system_map([*runtime, (0xFFFF_FFFF_C000_0000, "t", "f", "mod")])
    )
    vmcoreinfo = synthetic_vmcoreinfo(
        {"SYMBOL(_stext)": f"{TEXT_ADDR + KASLR:x}", "KERNELOFFSET": f"{KASLR:x}"}
    )
    core = make_file("core", core_bytes(vmcoreinfo))
    with kvm_rs.Kvm(str(kallsyms), str(core)) as kd:
        assert kd.info.exec_format == "kallsyms"
        assert kd.nlist(["jiffies"]) == {"jiffies": TEXT_ADDR + 0x20_0000 + KASLR}


# -- §7: nlist ------------------------------------------------------------------------------------

NLIST_TYPES = {
    "_stext": kvm_rs.N_TEXT | kvm_rs.N_EXT,
    "local_func": kvm_rs.N_TEXT,
    "linux_banner": kvm_rs.N_DATA | kvm_rs.N_EXT,
    "jiffies": kvm_rs.N_DATA | kvm_rs.N_EXT,
    "local_data": kvm_rs.N_DATA,
    "mem_section": kvm_rs.N_BSS | kvm_rs.N_EXT,
    "local_bss": kvm_rs.N_BSS,
    "kexec_control_code_size": kvm_rs.N_ABS | kvm_rs.N_EXT,
}


@pytest.mark.parametrize("exec_kind", ["system.map", "elf"])
def test_nlist_types(exec_kind: str, core: str, make_file) -> None:
    data = elfwriter.system_map(SYMBOLS) if exec_kind == "system.map" else kernel_image()
    exec_path = make_file("exec", data)
    values = {name: value for value, _, name in SYMBOLS}
    with kvm_rs.Kvm(str(exec_path), core) as kd:
        nl = [kvm_rs.Nlist(name) for name in NLIST_TYPES]
        assert kvm_rs.nlist(kd, nl) == 0
    assert {e.n_name: e.n_type for e in nl} == NLIST_TYPES
    assert {e.n_name: e.n_value for e in nl} == {n: values[n] for n in NLIST_TYPES}


def test_nlist_rules(sysmap: str, core: str) -> None:
    kd = kvm_rs.openfiles(sysmap, core)
    assert kd is not None
    nl = [
        kvm_rs.Nlist("_jiffies", n_type=0x55, n_value=0x1234),
        kvm_rs.Nlist("_stext"),
        kvm_rs.Nlist("__jiffies", n_type=0x55, n_value=0x1234),
        kvm_rs.Nlist(b"jiffies_64"),
        kvm_rs.Nlist("no_such_symbol", n_type=0x55, n_value=0x1234),
        kvm_rs.Nlist(""),
        kvm_rs.Nlist("jiffies", n_type=0x77, n_value=0x4321),
    ]
    assert kvm_rs.nlist(kd, nl) == 2
    assert (nl[0].n_type, nl[0].n_value) == (kvm_rs.N_DATA | kvm_rs.N_EXT, TEXT_ADDR + 0x20_0000)
    assert (nl[1].n_type, nl[1].n_value) == (kvm_rs.N_TEXT | kvm_rs.N_EXT, TEXT_ADDR)
    assert (nl[2].n_type, nl[2].n_value) == (0, 0)  # one underscore only
    assert nl[3].n_value == TEXT_ADDR + 0x20_0000
    assert (nl[4].n_type, nl[4].n_value) == (0, 0)  # cleared
    assert (nl[6].n_type, nl[6].n_value) == (0x77, 0x4321)  # after the end: untouched
    assert kvm_rs.nlist(kd, [kvm_rs.Nlist(None), kvm_rs.Nlist("jiffies")]) == 0
    assert kvm_rs.geterr(kd) == ""
    assert kd.nlist(["jiffies", "nope", "_jiffies"]) == {
        "jiffies": TEXT_ADDR + 0x20_0000,
        "_jiffies": TEXT_ADDR + 0x20_0000,
    }
    assert kvm_rs.close(kd) == 0


def test_nlist_bad_namelist(capsys) -> None:
    kd = kvm_rs.open(None, None, None, kvm_rs.KVM_NO_FILES, ERRSTR)
    assert kd is not None
    nl = [kvm_rs.Nlist("jiffies", n_type=3, n_value=3)]
    assert kvm_rs.nlist(kd, nl) == -1
    assert kvm_rs.geterr(kd) == "bad namelist"
    with pytest.raises(kvm_rs.KvmError) as raised:
        kd.nlist(["jiffies"])
    assert str(raised.value) == "bad namelist"
    assert capsys.readouterr().err == ""  # a soft error: never printed
    assert kvm_rs.close(kd) == 0


# -- message length and errbuf ----------------------------------------------------------------


def long_missing_path(tmp_path: Path, length: int) -> str:
    """A nonexistent path of about `length` bytes, in components short enough to be legal."""
    parts = []
    total = len(str(tmp_path))
    while total < length - 201:
        parts.append("d" * 200)
        total += 201
    return str(tmp_path.joinpath(*parts, "core"))


def test_message_is_at_most_2047_bytes(sysmap: str, tmp_path: Path, capsys) -> None:
    path = long_missing_path(tmp_path, 3900)
    assert len(path) < kvm_rs.PATH_MAX
    with pytest.raises(kvm_rs.KvmError) as raised:
        kvm_rs.Kvm(sysmap, path)
    message = str(raised.value)
    assert 0 < len(os.fsencode(message)) <= 2047
    assert message.startswith(path[:1000])
    assert kvm_rs.open(sysmap, path, errstr=ERRSTR) is None
    printed = capsys.readouterr().err
    assert printed == f"{ERRSTR}: {message}\n"


@pytest.mark.parametrize("size", [1, 2, 8, 100, 2047, 2048, 2049, 4096])
def test_errbuf_truncation(size: int, sysmap: str, tmp_path: Path) -> None:
    path = long_missing_path(tmp_path, 3900)
    with pytest.raises(kvm_rs.KvmError) as raised:
        kvm_rs.Kvm(sysmap, path)
    message = os.fsencode(str(raised.value))
    errbuf = bytearray(b"\xaa" * size)
    assert kvm_rs.openfiles(sysmap, path, errbuf=errbuf) is None
    room = min(size, 2048) - 1
    assert bytes(errbuf[:room]) == message[:room]
    assert errbuf[room] == 0
    assert bytes(errbuf[room + 1 :]) == b"\xaa" * (size - room - 1)


def test_errbuf_short_message_keeps_tail(sysmap: str) -> None:
    errbuf = bytearray(b"\xaa" * 100)
    assert kvm_rs.openfiles(sysmap, NOWHERE, errbuf=errbuf) is None
    message = f"{NOWHERE}: No such file or directory".encode()
    assert bytes(errbuf) == message + b"\0" + b"\xaa" * (100 - len(message) - 1)


@pytest.mark.parametrize(
    "make",
    [lambda: memoryview(bytearray(256)), lambda: array.array("B", bytes(256))],
    ids=["memoryview", "array"],
)
def test_errbuf_buffer_types(make, sysmap: str) -> None:
    errbuf = make()
    assert kvm_rs.openfiles(sysmap, NOWHERE, errbuf=errbuf) is None
    raw = bytes(errbuf)
    assert raw[: raw.index(0)] == f"{NOWHERE}: No such file or directory".encode()


def test_errbuf_non_utf8_path(sysmap: str, tmp_path: Path) -> None:
    """A path that is not UTF-8 comes back in errbuf as the bytes the caller gave."""
    path = os.fsencode(tmp_path) + b"/\xff\xfe-core"
    errbuf = bytearray(512)
    assert kvm_rs.openfiles(sysmap, path, errbuf=errbuf) is None
    assert bytes(errbuf[: errbuf.index(0)]) == path + b": No such file or directory"


# -- KvmError and Python types ----------------------------------------------------------------


def test_kvm_error_without_errno(sysmap: str, some_file: Path) -> None:
    with pytest.raises(kvm_rs.KvmError) as raised:
        kvm_rs.Kvm(sysmap, some_file)
    error = raised.value
    assert isinstance(error, OSError)
    assert not isinstance(error, FileNotFoundError)
    assert str(error) == f"{some_file}: not a kernel core file"


WRONG_TYPES = {
    "execfile-int": dict(execfile=123),
    "corefile-float": dict(corefile=12.5),
    "swapfile-object": dict(swapfile=object()),
    "execfile-list": dict(execfile=["/boot/vmlinux"]),
    "flags-str": dict(flags="0"),
    "flags-float": dict(flags=0.0),
    "flags-none": dict(flags=None),
}


@pytest.mark.parametrize("kwargs", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_wrong_types_are_type_errors(kwargs: dict, core: str, sysmap: str) -> None:
    args = {"execfile": sysmap, "corefile": core, **kwargs}
    with pytest.raises(TypeError):
        kvm_rs.Kvm(**args)
    with pytest.raises(TypeError):
        kvm_rs.openfiles(**args)
    with pytest.raises(TypeError):
        kvm_rs.open(**args)


@pytest.mark.parametrize("errbuf", [b"read-only", "a str", 42], ids=["bytes", "str", "int"])
def test_errbuf_wrong_type(errbuf: Any, sysmap: str) -> None:
    with pytest.raises(TypeError):
        kvm_rs.openfiles(sysmap, NOWHERE, errbuf=errbuf)
