"""Wrong arguments through the public API (SPEC §3, §7, §8, §9): a wrong Python type is a
TypeError, a value no 64-bit kernel can hold is a ValueError in the Pythonic layer and -1
with an error text in the C-style calls, and neither ever writes, allocates without bound or
escapes as an OverflowError. The open-time inputs (empty paths, devices, directories) are in
test_messages.py; the environment (KVM_RS_PAGE_CACHE) is read at open, tested here through a
child process.
"""

from __future__ import annotations

import array
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kvm_rs
import pytest

DIRECT_MAP = 0xFFFF_8880_0000_0000  # the synthetic core's one PT_LOAD: 4 KiB of 0xaa
ERRSTR = "prog"
OUTSIDE = [-5, -(2**64), 2**64, 2**64 + 5, 2**200]


def outside(op: str, addr: int, what: str = "address") -> str:
    return f"{op}: {what} {addr:#x} is outside the 64-bit address space"


@pytest.fixture
def kd(synthetic_map: Path, synthetic_core: Path) -> Any:
    with kvm_rs.Kvm(synthetic_map, synthetic_core) as handle:
        yield handle


@pytest.fixture
def writable(synthetic_map: Path, synthetic_core: Path) -> Any:
    with kvm_rs.Kvm(synthetic_map, synthetic_core, flags=os.O_RDWR) as handle:
        yield handle


# -- nlist: a str where a sequence of names belongs ---------------------------------------------


@pytest.mark.parametrize("names", ["jiffies", b"jiffies", bytearray(b"jiffies")])
def test_kvm_nlist_of_one_string_is_a_type_error(kd: kvm_rs.Kvm, names: Any) -> None:
    with pytest.raises(TypeError) as raised:
        kd.nlist(names)
    assert str(raised.value) == (
        f"names must be a sequence, not {type(names).__name__} (for one name, pass [{names!r}])"
    )
    assert kd.geterr() == ""
    assert kd.nlist(["jiffies"]) != {}


@pytest.mark.parametrize("nl", ["x", b"x"])
def test_c_nlist_of_one_string_is_a_type_error(kd: kvm_rs.Kvm, nl: Any) -> None:
    with pytest.raises(TypeError) as raised:
        kvm_rs.nlist(kd, nl)
    kind = type(nl).__name__
    assert str(raised.value) == (
        f"nl must be a sequence, not {kind} (for one name, pass [kvm_rs.Nlist({nl!r})])"
    )


def test_c_nlist_of_names_not_entries_is_a_type_error(kd: kvm_rs.Kvm) -> None:
    with pytest.raises(TypeError, match=r"^nl must hold Nlist entries, not str$"):
        kvm_rs.nlist(kd, ["jiffies"])
    entry = kvm_rs.Nlist("jiffies")
    assert kvm_rs.nlist(kd, [entry]) == 0
    assert entry.n_value != 0


# -- open: a split dump's parts ----------------------------------------------------------------


def test_none_as_a_part_is_a_type_error(synthetic_map: Path, synthetic_core: Path) -> None:
    for parts in ([synthetic_core, None], [None]):
        with pytest.raises(TypeError) as raised:
            kvm_rs.Kvm(synthetic_map, parts)
        assert str(raised.value) == "corefile part must be str, bytes or os.PathLike, not NoneType"
    with pytest.raises(ValueError, match=r"^corefile: an empty sequence of parts$"):
        kvm_rs.Kvm(synthetic_map, [])


# -- write: data must be bytes-like ---------------------------------------------------------------


@pytest.mark.parametrize("data", [5, 0, "ab", [1, 2], None])
def test_write_of_what_is_not_bytes_is_a_type_error(
    writable: kvm_rs.Kvm, synthetic_core: Path, data: Any
) -> None:
    before = synthetic_core.read_bytes()
    expected = (
        "data must be a bytes-like object (bytes, bytearray, memoryview), "
        f"not {type(data).__name__}"
    )
    with pytest.raises(TypeError) as raised:
        kvm_rs.write(writable, DIRECT_MAP, data)
    assert str(raised.value) == expected
    with pytest.raises(TypeError) as raised:
        writable.write(DIRECT_MAP, data)
    assert str(raised.value) == expected
    assert synthetic_core.read_bytes() == before
    assert writable.geterr() == ""


@pytest.mark.parametrize(
    "data", [b"\x01\x02", bytearray(b"\x01\x02"), memoryview(b"\x01\x02"), array.array("B", [1, 2])]
)
def test_write_of_bytes_like_objects(writable: kvm_rs.Kvm, data: Any) -> None:
    assert kvm_rs.write(writable, DIRECT_MAP + 8, data) == 2
    assert writable.write(DIRECT_MAP + 16, data) == 2
    assert writable.read(DIRECT_MAP + 8, 10) == b"\x01\x02" + b"\xaa" * 6 + b"\x01\x02"


# -- addresses outside [0, 2**64) ------------------------------------------------------------------


@pytest.mark.parametrize("addr", OUTSIDE)
def test_c_read_outside_the_address_space(kd: kvm_rs.Kvm, addr: int) -> None:
    buf = bytearray(b"\x55" * 8)
    assert kvm_rs.read(kd, addr, buf) == -1
    assert kvm_rs.geterr(kd) == outside("kvm_read", addr)
    assert buf == b"\x55" * 8


@pytest.mark.parametrize("addr", OUTSIDE)
def test_c_write_outside_the_address_space(
    writable: kvm_rs.Kvm, synthetic_core: Path, addr: int
) -> None:
    before = synthetic_core.read_bytes()
    assert kvm_rs.write(writable, addr, b"xy") == -1
    assert kvm_rs.geterr(writable) == outside("kvm_write", addr)
    assert synthetic_core.read_bytes() == before


def test_c_address_error_is_hard(synthetic_map: Path, synthetic_core: Path, capsys) -> None:
    """Not `invalid address (0x…)` (soft): the Sun convention prints it."""
    kd = kvm_rs.open(synthetic_map, synthetic_core, errstr=ERRSTR)
    assert kd is not None
    try:
        capsys.readouterr()
        assert kvm_rs.read(kd, -5, bytearray(8)) == -1
        assert (
            capsys.readouterr().err
            == f"{ERRSTR}: kvm_read: address -0x5 is outside the 64-bit address space\n"
        )
    finally:
        kvm_rs.close(kd)


def test_c_calls_on_a_closed_handle_with_a_bad_address(kd: kvm_rs.Kvm) -> None:
    kd.close()
    assert kvm_rs.read(kd, -1, bytearray(8)) == -1
    assert kvm_rs.write(kd, 2**64, b"x") == -1
    assert kvm_rs.geterr(kd) == outside("kvm_write", 2**64)


@pytest.mark.parametrize("addr", OUTSIDE)
def test_kvm_methods_outside_the_address_space(writable: kvm_rs.Kvm, addr: int) -> None:
    with pytest.raises(ValueError) as raised:
        writable.read(addr, 8)
    assert str(raised.value) == outside("kvm_read", addr)
    with pytest.raises(ValueError) as raised:
        writable.write(addr, b"x")
    assert str(raised.value) == outside("kvm_write", addr)
    with pytest.raises(ValueError) as raised:
        writable.read_physical(addr, 8)
    assert str(raised.value) == outside("kvm_read", addr, "physical address")
    # A programming error, not a kvm error: the handle's text is untouched.
    assert writable.geterr() == ""


@pytest.mark.parametrize("addr", [1.5, "0x10", None, b"\x00"])
def test_address_that_is_no_integer_is_a_type_error(writable: kvm_rs.Kvm, addr: Any) -> None:
    expected = f"addr must be int, not {type(addr).__name__}"
    calls = [
        lambda: kvm_rs.read(writable, addr, bytearray(8)),
        lambda: kvm_rs.write(writable, addr, b"x"),
        lambda: writable.read(addr, 8),
        lambda: writable.read_physical(addr, 8),
        lambda: writable.write(addr, b"x"),
    ]
    for call in calls:
        with pytest.raises(TypeError) as raised:
            call()
        assert str(raised.value) == expected


class Index:
    """An integer that is not an int (numpy's integers are such)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_address_with_index_is_taken(kd: kvm_rs.Kvm) -> None:
    buf = bytearray(4)
    assert kvm_rs.read(kd, Index(DIRECT_MAP), buf) == 4
    assert kd.read(Index(DIRECT_MAP), Index(4)) == bytes(buf) == b"\xaa" * 4
    assert kvm_rs.read(kd, Index(-1), buf) == -1
    assert kd.geterr() == outside("kvm_read", -1)


# -- sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [-1, -(2**64)])
def test_negative_size(kd: kvm_rs.Kvm, size: int) -> None:
    with pytest.raises(ValueError) as raised:
        kd.read(DIRECT_MAP, size)
    assert str(raised.value) == f"kvm_read: size {size} is negative"
    with pytest.raises(ValueError) as raised:
        kd.read_physical(0, size)
    assert str(raised.value) == f"kvm_read: size {size} is negative"


@pytest.mark.parametrize("size", [2**64, 2**64 + 1, 2**100])
def test_size_beyond_64_bits(kd: kvm_rs.Kvm, size: int) -> None:
    expected = f"kvm_read: size {size} is too large (at most 2**64 - 1 bytes)"
    for call in (kd.read, kd.read_physical):
        with pytest.raises(ValueError) as raised:
            call(DIRECT_MAP, size)
        assert str(raised.value) == expected


def test_size_that_is_no_integer_is_a_type_error(kd: kvm_rs.Kvm) -> None:
    for call in (kd.read, kd.read_physical):
        with pytest.raises(TypeError, match=r"^size must be int, not float$"):
            call(DIRECT_MAP, 8.0)


@pytest.mark.parametrize("size", [2**63, 2**64 - 1])
def test_huge_size_is_a_bounded_short_read(kd: kvm_rs.Kvm, size: int) -> None:
    """Grown a block at a time: the read stops at the first byte the dump does not hold,
    with what it read before; nothing of `size` is allocated up front."""
    with pytest.raises(kvm_rs.KvmError) as raised:
        kd.read(DIRECT_MAP, size)
    assert raised.value.message == f"invalid address ({DIRECT_MAP + 4096:#x})"
    assert raised.value.partial == b"\xaa" * 4096
    with pytest.raises(kvm_rs.KvmError) as raised:
        kd.read_physical(0, size)
    assert raised.value.partial == b"\xaa" * 4096
    assert raised.value.address == 4096


# -- KVM_RS_PAGE_CACHE, read at open -------------------------------------------------------------

OPEN_IN_CHILD = """
import sys, kvm_rs
try:
    kvm_rs.Kvm(sys.argv[1], sys.argv[2]).close()
except kvm_rs.KvmError as error:
    print(f"{type(error).__name__}|{error.errno}|{error}")
else:
    print("opened")
errbuf = bytearray(256)
if kvm_rs.openfiles(sys.argv[1], sys.argv[2], errbuf=errbuf) is None:
    print(bytes(errbuf).split(b"\\0")[0].decode())
"""


def open_with_page_cache(value: str | None, execfile: Path, corefile: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "KVM_RS_PAGE_CACHE"}
    if value is not None:
        env["KVM_RS_PAGE_CACHE"] = value
    run = subprocess.run(
        [sys.executable, "-c", OPEN_IN_CHILD, str(execfile), str(corefile)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    return run.stdout.splitlines()


@pytest.mark.parametrize("value", ["abc", "-1", "1048577", "12 pages", "0x40", "1e3"])
def test_page_cache_setting_that_is_no_page_count(
    value: str, synthetic_map: Path, synthetic_core: Path
) -> None:
    message = f"KVM_RS_PAGE_CACHE={value}: not a number of pages (0 to 1048576)"
    lines = open_with_page_cache(value, synthetic_map, synthetic_core)
    assert lines == [f"KvmError|None|{message}", message]


@pytest.mark.parametrize("value", [None, "", "0", " 16 ", "1048576"])
def test_page_cache_settings_that_open(
    value: str | None, synthetic_map: Path, synthetic_core: Path
) -> None:
    assert open_with_page_cache(value, synthetic_map, synthetic_core) == ["opened"]


def test_page_cache_setting_is_checked_for_every_format(corpus: Any) -> None:
    kdump = corpus.dump("boot-nokaslr.mdf-d31-zlib.kdump")
    assert open_with_page_cache("4", corpus.system_map, kdump) == ["opened"]
    message = "KVM_RS_PAGE_CACHE=lots: not a number of pages (0 to 1048576)"
    assert open_with_page_cache("lots", corpus.system_map, kdump) == [
        f"KvmError|None|{message}",
        message,
    ]
