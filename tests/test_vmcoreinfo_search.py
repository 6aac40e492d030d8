"""SPEC 13: a dump that carries no VMCOREINFO is searched for the kernel's own page (one
that starts with `OSRELEASE=`), within what the file really holds; `vmcoreinfo=` wins over
both. On small synthetic ELF cores (the real-dump cases are in test_fleet.py)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import elfwriter
import kvm_rs
import pytest
import synthetic
from elfwriter import Load
from synthetic import synthetic_vmcoreinfo

PAGE = 4096
DIRECT_MAP = 0xFFFF_8880_0000_0000


def core_with_vmcoreinfo_page(at: int) -> bytes:
    """No VMCOREINFO note; physical page `at` holds the text, the pages around it noise."""
    page = synthetic_vmcoreinfo().ljust(PAGE, b"\0")
    noise = b"OSRELEASE" + b"\xff" * (PAGE - 9)  # starts almost right: not VMCOREINFO
    data = noise * (at // PAGE) + page + noise
    return elfwriter.elf_core(None, [Load(DIRECT_MAP, 0, data)])


@pytest.fixture
def system_map(tmp_path: Path) -> Path:
    path = tmp_path / "System.map"
    path.write_bytes(elfwriter.system_map(synthetic.SYMBOLS))
    return path


@pytest.mark.parametrize("at", [0, 3 * PAGE])
def test_found_in_memory(tmp_path: Path, system_map: Path, at: int) -> None:
    core = tmp_path / "core"
    core.write_bytes(core_with_vmcoreinfo_page(at))
    with kvm_rs.Kvm(system_map, core) as kd:
        assert kd.info.vmcoreinfo_source == "memory"
        assert kd.info.osrelease == synthetic.TEST_RELEASE
        assert kd.info.vmcoreinfo["SYMBOL(_stext)"] == f"{synthetic.TEXT_ADDR:x}"


def test_given_wins_over_memory(tmp_path: Path, system_map: Path) -> None:
    core = tmp_path / "core"
    core.write_bytes(core_with_vmcoreinfo_page(PAGE))
    given = synthetic_vmcoreinfo({"CRASHTIME": "1700000000"}).decode()
    with kvm_rs.Kvm(system_map, core, vmcoreinfo=given) as kd:
        assert kd.info.vmcoreinfo_source == "given"
        assert kd.info.vmcoreinfo["CRASHTIME"] == "1700000000"


def test_none_found(tmp_path: Path, system_map: Path) -> None:
    core = tmp_path / "core"
    core.write_bytes(elfwriter.elf_core(None, [Load(DIRECT_MAP, 0, b"\xaa" * 4 * PAGE)]))
    with kvm_rs.Kvm(system_map, core) as kd:
        assert kd.info.vmcoreinfo_source is None
        assert kd.info.vmcoreinfo == {}


def test_wrong_type_is_a_type_error(tmp_path: Path, system_map: Path) -> None:
    core = tmp_path / "core"
    core.write_bytes(core_with_vmcoreinfo_page(0))
    with pytest.raises(TypeError, match="vmcoreinfo must be str or bytes"):
        kvm_rs.Kvm(system_map, core, vmcoreinfo=42)  # type: ignore[arg-type]


HOSTILE_LOADS = 4096


def hostile_core() -> bytes:
    """4096 PT_LOADs, each claiming 1 TiB of file data at its own physical address, in a
    file of a few pages: the search must be bounded by the file, not by the claims."""
    image, layout = elfwriter.elf_core_with_layout(
        None, [Load(DIRECT_MAP + i * PAGE, i << 40, b"\xaa" * 16) for i in range(HOSTILE_LOADS)]
    )
    image = bytearray(image)
    for index in range(HOSTILE_LOADS):
        at = layout.phoff + (index + 1) * 56
        struct.pack_into("<QQ", image, at + 32, 1 << 40, 1 << 40)  # p_filesz, p_memsz
    return bytes(image)


def test_search_is_bounded_by_the_file(tmp_path: Path, system_map: Path) -> None:
    core = tmp_path / "hostile"
    core.write_bytes(hostile_core())
    # In a child: an unbounded search would never return.
    script = (
        "import kvm_rs, sys\n"
        "kd = kvm_rs.Kvm(sys.argv[1], sys.argv[2])\n"
        "print(kd.info.vmcoreinfo_source, kd.info.truncated)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(system_map), str(core)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["None", "True"]
