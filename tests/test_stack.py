"""Kvm.stack (SPEC §14): the crashing CPU's backtrace from the dump alone, against triage.json.

triage.json (beside truth.json in the corpus and the fleet) has, per boot, what drgn with the
kernel's DWARF debug info says the crashed task's stack is: `ksyms` names each real frame by
the nearest preceding text symbol of System.map (return addresses looked up at pc - 1), and
`frames` gives each frame's pc and offset (inlined frames repeat their caller's pc). Every
dump of every boot is checked, with the System.map and with the dump's own kallsyms
(CORE_SYMBOLS, kernels ≥ 6.0), and the split set opened whole.

The hostile cases are copies in a temporary folder, damaged through kvm_write: the ORC tables
zeroed (the walk falls back to a stack scan whose frames are unreliable) and an aarch64 frame
record that points at itself (the walk stops, the frame after which the chain broke marked
unreliable).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import elfwriter
import kvm_rs
import pytest
from synthetic import SYMBOLS, synthetic_vmcoreinfo
from test_fleet import elf_notes

if TYPE_CHECKING:
    from conftest import Corpus, Fleet

Symbols = Union[str, "kvm_rs._handle._CoreSymbols"]

#: Every dump of every boot, as (source, boot, dump); a split set by its parts joined by "+".
DUMPS = [
    ("corpus", "boot-kaslr", "boot-kaslr.mdf-d31-snappy.kdump"),
    ("corpus", "boot-nokaslr", "boot-nokaslr.mdf-d31-lzo.kdump"),
    ("corpus", "boot-nokaslr", "boot-nokaslr.mdf-d31-zlib.kdump"),
    ("corpus", "boot-nokaslr", "boot-nokaslr.mdf-d31-zstd.kdump"),
    ("corpus", "boot-nokaslr", "boot-nokaslr.qemu-elf-paging.vmcore"),
    ("corpus", "boot-nokaslr", "boot-nokaslr.qemu-elf.vmcore"),
    ("corpus", "boot-nokaslr", "boot-nokaslr.qemu-kdump-zlib.vmcore"),
    ("fleet", "arm64-a", "arm64-a.qemu-elf.vmcore"),
    ("fleet", "arm64-a", "arm64-a.qemu-kdump-zlib.vmcore"),
    ("fleet", "big-a", "big-a.mdf-d31.elf.vmcore"),
    ("fleet", "big-a", "big-a.mdf-d31-zlib-split1.kdump+big-a.mdf-d31-zlib-split2.kdump"),
    ("fleet", "bullseye-a", "bullseye-a.mdf-d31-zlib.kdump"),
    ("fleet", "trixie-a", "trixie-a.mdf-d31-zlib.kdump"),
]
#: Kernels before 6.0 name no kallsyms tables in VMCOREINFO.
NO_CORE_KALLSYMS = {"bullseye-a"}
CORPUS_ELF = "boot-nokaslr.qemu-elf.vmcore"
ARM64_ELF = "arm64-a.qemu-elf.vmcore"

NT_PRSTATUS = 1
#: offsetof(struct elf_prstatus, pr_reg) on 64-bit machines.
PR_REG = 112


@cache
def _triage(folder: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((Path(folder) / "triage.json").read_text())
    return result


def _source(request: pytest.FixtureRequest, source: str) -> tuple[Path, dict[str, Any]]:
    """The folder of `source` (its fixture) and the truth of its boots."""
    folder: Path = request.getfixturevalue(source).dir
    return folder, _triage(str(folder))["boots"]


def _exec_file(request: pytest.FixtureRequest, source: str, dump: str) -> Path:
    if source == "corpus":
        corpus: Corpus = request.getfixturevalue("corpus")
        return corpus.system_map
    fleet: Fleet = request.getfixturevalue("fleet")
    return fleet.exec_file(dump.split("+")[0])


def _core(folder: Path, dump: str) -> str | list[str]:
    parts = [str(folder / part) for part in dump.split("+")]
    return parts if len(parts) > 1 else parts[0]


def _real_frames(boot: dict[str, Any]) -> list[dict[str, Any]]:
    """The truth's frames without the inlined ones (they share their caller's pc)."""
    return [f for f in boot["crashed"]["stack"]["frames"] if not f["inline"]]


def assert_matches_truth(frames: list[kvm_rs.Frame], boot: dict[str, Any]) -> None:
    names = [f.symbol for f in frames]
    assert names == boot["crashed"]["stack"]["ksyms"]
    truth = _real_frames(boot)
    assert [hex(f.pc) for f in frames] == [t["pc"] for t in truth]
    assert [hex(f.offset or 0) for f in frames] == [t["ksym_off"] for t in truth]
    assert all(f.reliable and f.module is None for f in frames)


def test_every_dump_of_every_boot_is_listed(corpus: Corpus, fleet: Fleet) -> None:
    listed = {(source, dump) for source, _, dump in DUMPS}
    for source, folder in (("corpus", corpus.dir), ("fleet", fleet.dir)):
        for boot in _triage(str(folder))["boots"].values():
            for dump in boot["dumps"]:
                if source == "fleet" and fleet.is_split_part(dump):
                    dump = "+".join(fleet.split_sets[fleet.split_set_of(dump)]["parts"])
                assert (source, dump) in listed


@pytest.mark.parametrize("symbols", ["system.map", "core"])
@pytest.mark.parametrize(("source", "boot_name", "dump"), DUMPS)
def test_crashed_stack_equals_the_truth(
    request: pytest.FixtureRequest, source: str, boot_name: str, dump: str, symbols: str
) -> None:
    folder, boots = _source(request, source)
    boot = boots[boot_name]
    execfile: Any = (
        str(_exec_file(request, source, dump)) if symbols == "system.map" else kvm_rs.CORE_SYMBOLS
    )
    core = _core(folder, dump)
    if symbols == "core" and boot_name in NO_CORE_KALLSYMS:
        no_kallsyms = pytest.raises(kvm_rs.KvmError, match="no kallsyms tables in VMCOREINFO")
        with no_kallsyms, kvm_rs.Kvm(execfile, core) as kd:
            kd.stack()
        return
    with kvm_rs.Kvm(execfile, core) as kd:
        frames = kd.stack()
        assert_matches_truth(frames, boot)
        # The truth's crashed task ran on the CPU that panicked.
        assert boot["crashed"]["cpu"] == boot["panic_cpu"]
        # From `panic` down to the syscall entry, as the SPEC's acceptance words it.
        names = [f.symbol for f in frames]
        entry = "el0t_64_sync" if boot["arch"] == "aarch64" else "entry_SYSCALL_64_after_hwframe"
        assert names.index("panic") < names.index(entry) == len(names) - 1
        # Asking again gives the same frames (the indexes are built once).
        assert kd.stack() == frames


def test_stripped_vmlinux_names_the_same_frames(corpus: Corpus) -> None:
    boot = _triage(str(corpus.dir))["boots"]["boot-nokaslr"]
    with kvm_rs.Kvm(str(corpus.vmlinux), str(corpus.dir / CORPUS_ELF)) as kd:
        assert_matches_truth(kd.stack(), boot)


def test_frame_is_a_named_tuple(corpus: Corpus) -> None:
    with kvm_rs.Kvm(str(corpus.system_map), str(corpus.dir / CORPUS_ELF)) as kd:
        first = kd.stack()[0]
    assert isinstance(first, kvm_rs.Frame)
    assert first._fields == ("pc", "symbol", "offset", "module", "reliable")
    assert first == kvm_rs.Frame(first.pc, "delay_tsc", 0x33, None, True)


def test_a_pid_gives_that_task(corpus: Corpus) -> None:
    # Every task's stack: test_stacks_all.py.
    with kvm_rs.Kvm(str(corpus.system_map), str(corpus.dir / CORPUS_ELF)) as kd:
        assert kd.stack(1) == kd.stack(None) == kd.stack()
        assert kd.stack(2)[0].symbol == "__schedule"


def test_no_files_and_closed_handles() -> None:
    kd = kvm_rs.Kvm(None, None, None, kvm_rs.KVM_NO_FILES)
    with pytest.raises(kvm_rs.KvmError, match=r"^kvm_stack: no core file \(KVM_NO_FILES\)$"):
        kd.stack()
    assert kd.geterr() == "kvm_stack: no core file (KVM_NO_FILES)"
    kd.close()
    with pytest.raises(kvm_rs.KvmError, match="kvm handle is closed"):
        kd.stack()


def test_a_dump_without_crash_registers(make_file) -> None:
    sysmap = make_file("System.map", elfwriter.system_map(SYMBOLS))
    load = [elfwriter.Load(0xFFFF_8880_0000_0000, 0, b"\xaa" * 4096)]
    bare = make_file("bare.core", elfwriter.elf_core(synthetic_vmcoreinfo(), load))
    with kvm_rs.Kvm(str(sysmap), str(bare)) as kd, pytest.raises(kvm_rs.KvmError) as raised:
        kd.stack()
    assert raised.value.message == f"{bare}: no backtrace: the dump has no NT_PRSTATUS notes"
    assert raised.value.filename == str(bare)
    short = make_file(
        "short.core",
        elfwriter.elf_core(
            synthetic_vmcoreinfo(), load, extra_notes=[(b"CORE", NT_PRSTATUS, b"\0" * 200)]
        ),
    )
    too_short = pytest.raises(kvm_rs.KvmError, match="no backtrace: NT_PRSTATUS of CPU 0 is too")
    with kvm_rs.Kvm(str(sysmap), str(short)) as kd, too_short:
        kd.stack()


def _elf_prstatus_registers(path: Path, count: int) -> list[list[int]]:
    """The first `count` registers of each NT_PRSTATUS note of an ELF64 little-endian core,
    parsed here independently of the product."""
    return [
        list(struct.unpack_from(f"<{count}Q", desc, PR_REG))
        for name, n_type, desc, _ in elf_notes(path)
        if name == b"CORE" and n_type == NT_PRSTATUS
    ]


def _writable_copy(original: Path, tmp_path: Path) -> Path:
    copy = tmp_path / original.name
    shutil.copyfile(original, copy)
    return copy


def test_zeroed_orc_tables_give_an_unreliable_scan(corpus: Corpus, tmp_path: Path) -> None:
    boot = _triage(str(corpus.dir))["boots"]["boot-nokaslr"]
    copy = _writable_copy(corpus.dir / CORPUS_ELF, tmp_path)
    sysmap = str(corpus.system_map)
    with kvm_rs.Kvm(sysmap, str(copy), None, os.O_RDWR) as kd:
        found = kd.nlist(["__start_orc_unwind", "__stop_orc_unwind"])
        start, stop = found["__start_orc_unwind"], found["__stop_orc_unwind"]
        step = 1 << 20
        for at in range(start, stop, step):
            size = min(step, stop - at)
            assert kd.write(at, bytes(size)) == size
    with kvm_rs.Kvm(sysmap, str(copy)) as kd:
        frames = kd.stack()
    truth = boot["crashed"]["stack"]["ksyms"]
    # The crash registers' frame stands; every other frame is a guess from the stack.
    assert frames[0].symbol == truth[0] and frames[0].reliable
    assert len(frames) > 1 and not any(f.reliable for f in frames[1:])
    assert len(frames) <= 128
    # The real return addresses are on the stack: the truth is among the guesses, in order.
    names = iter(f.symbol for f in frames[1:])
    assert all(name in names for name in truth[1:])


def test_a_looping_frame_record_is_bounded(fleet: Fleet, tmp_path: Path) -> None:
    boot = _triage(str(fleet.dir))["boots"]["arm64-a"]
    original = fleet.dump(ARM64_ELF)
    [registers] = _elf_prstatus_registers(original, 34)
    fp = registers[29]
    copy = _writable_copy(original, tmp_path)
    sysmap = str(fleet.exec_file(ARM64_ELF))
    with kvm_rs.Kvm(sysmap, str(copy), None, os.O_RDWR) as kd:
        # The record at x29 names itself as its caller's: the chain would loop forever.
        assert kd.write(fp, struct.pack("<Q", fp)) == 8
    with kvm_rs.Kvm(sysmap, str(copy)) as kd:
        frames = kd.stack()
    truth = boot["crashed"]["stack"]["ksyms"]
    assert 1 < len(frames) <= 3
    assert [f.symbol for f in frames] == truth[: len(frames)]
    assert not frames[-1].reliable
