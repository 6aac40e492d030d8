"""Damaged copies of the corpus dumps: cut at every header boundary, fields made absurd, bytes
flipped at random. Each gets its exact SPEC §5 message (the `<what>` words are those of
rust/src/formats/*.rs), through the raising and the C-style calls alike; none may crash.

The fuzz loops run in a child process (this file run as a script), so a crash or a hang
fails one test with the iteration that caused it instead of killing the session.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import kvm_rs
import pytest

if TYPE_CHECKING:
    from conftest import Corpus

ELF_DUMP = "boot-nokaslr.qemu-elf.vmcore"
PAGING_DUMP = "boot-nokaslr.qemu-elf-paging.vmcore"
KDUMP = "boot-nokaslr.mdf-d31-zlib.kdump"
FLATTENED = "boot-nokaslr.qemu-kdump-zlib.vmcore"
ERRSTR = "damaged"


def head(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


def cut_copy(src: Path, dst: Path, size: int) -> Path:
    """The first `size` bytes of `src`, written to `dst`."""
    with src.open("rb") as fin, dst.open("wb") as fout:
        remaining = size
        while remaining:
            block = fin.read(min(remaining, 1 << 20))
            if not block:
                break
            fout.write(block)
            remaining -= len(block)
    assert dst.stat().st_size == size
    return dst


def assert_rejected(exec_path: Path, core: Path, expected: str, capsys) -> None:
    """The open fails with `expected` in all three conventions, and nothing raises from the
    C-style calls."""
    with pytest.raises(kvm_rs.KvmError) as raised:
        kvm_rs.Kvm(exec_path, core)
    assert str(raised.value) == expected
    errbuf = bytearray(kvm_rs._POSIX2_LINE_MAX)
    assert kvm_rs.openfiles(exec_path, core, None, os.O_RDONLY, errbuf) is None
    assert bytes(errbuf[: errbuf.index(0)]) == os.fsencode(expected)
    capsys.readouterr()
    assert kvm_rs.open(exec_path, core, None, os.O_RDONLY, ERRSTR) is None
    assert capsys.readouterr().err == f"{ERRSTR}: {expected}\n"


def assert_opens_truncated(exec_path: Path, core: Path) -> None:
    kd = kvm_rs.openfiles(exec_path, core)
    assert kd is not None, "a dump whose data is cut short must still open"
    assert kd.info.truncated is True
    assert kd.nlist(["jiffies"])
    assert kvm_rs.geterr(kd) == ""
    assert kvm_rs.close(kd) == 0


# -- layouts, read from the files themselves ----------------------------------------------------


@dataclass
class ElfLayout:
    phoff: int
    phnum: int  # the real count (PN_XNUM resolved)
    shoff: int
    pn_xnum: bool
    notes: tuple[int, int]  # offset, size of the first PT_NOTE
    data: int  # the lowest PT_LOAD file offset

    @property
    def phdrs_end(self) -> int:
        return self.phoff + 56 * self.phnum


def elf_layout(path: Path) -> ElfLayout:
    raw = head(path, 64)
    phoff, shoff = struct.unpack_from("<QQ", raw, 32)
    (phnum,) = struct.unpack_from("<H", raw, 56)
    pn_xnum = phnum == 0xFFFF
    if pn_xnum:
        (phnum,) = struct.unpack_from("<I", head(path, shoff + 64), shoff + 44)
    table = head(path, phoff + 56 * phnum)[phoff:]
    notes = None
    data = None
    for i in range(phnum):
        p_type, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", table, 56 * i)
        if p_type == 4 and notes is None:
            notes = (offset, filesz)
        if p_type == 1:
            data = offset if data is None else min(data, offset)
    assert notes is not None and data is not None
    return ElfLayout(phoff, phnum, shoff, pn_xnum, notes, data)


@dataclass
class KdumpLayout:
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    vmcoreinfo: tuple[int, int]
    notes: tuple[int, int]
    dumped_pages: int

    @property
    def bitmap(self) -> int:
        return (1 + self.sub_hdr_size) * self.block_size

    @property
    def descriptors(self) -> int:
        return self.bitmap + self.bitmap_blocks * self.block_size

    @property
    def descriptors_end(self) -> int:
        return self.descriptors + 24 * self.dumped_pages


def kdump_layout(path: Path) -> KdumpLayout:
    raw = head(path, 1 << 16)
    assert raw[:8] == b"KDUMP   "
    # x86_64 disk_dump_header: status and the int fields after it start at 424.
    _, block_size, sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from("<5I", raw, 424)
    sub = struct.unpack_from("<QiiQQQQQQ", raw, block_size)
    vmcoreinfo = (sub[5], sub[6])
    notes = (sub[7], sub[8])
    (max_mapnr_64,) = struct.unpack_from("<Q", raw, block_size + 96)
    max_mapnr = max_mapnr_64 or max_mapnr
    bitmap_start = (1 + sub_hdr_size) * block_size
    half = bitmap_blocks * block_size // 2
    second = head(path, bitmap_start + 2 * half)[bitmap_start + half :]
    dumped = sum(bin(b).count("1") for b in second[: max_mapnr // 8])
    return KdumpLayout(block_size, sub_hdr_size, bitmap_blocks, vmcoreinfo, notes, dumped)


def test_layouts_are_what_the_cases_assume(corpus: Corpus) -> None:
    elf = elf_layout(corpus.dump(ELF_DUMP))
    assert (elf.phoff, elf.phnum, elf.pn_xnum) == (192, 5, False)
    assert elf.notes[0] == elf.phdrs_end < elf.data
    paging = elf_layout(corpus.dump(PAGING_DUMP))
    assert (paging.shoff, paging.phoff, paging.pn_xnum) == (64, 192, True)
    assert paging.phnum == corpus.dump_truth(PAGING_DUMP)["elf"]["real_phnum"]
    kdump = kdump_layout(corpus.dump(KDUMP))
    assert kdump.block_size == 4096
    assert kdump.block_size + 104 <= kdump.notes[0] < kdump.vmcoreinfo[0]
    assert kdump.vmcoreinfo[0] + kdump.vmcoreinfo[1] < kdump.notes[0] + kdump.notes[1]
    assert kdump.notes[0] + kdump.notes[1] < kdump.bitmap
    assert kdump.dumped_pages > 100


# -- ELF cores cut short ------------------------------------------------------------------------


def elf_cuts(layout: ElfLayout) -> dict[str, tuple[int, str]]:
    notes_offset, notes_size = layout.notes
    cuts = {
        "0": (0, "empty file"),
        "10": (10, "truncated core: ELF header"),
        "63": (63, "truncated core: ELF header"),
    }
    if layout.pn_xnum:
        cuts["64-at-shdr0"] = (64, "truncated core: section header 0")
        cuts["inside-shdr0"] = (100, "truncated core: section header 0")
        cuts["after-shdr0"] = (128, "truncated core: program headers")
    else:
        cuts["64"] = (64, "truncated core: program headers")
    cuts["e_phoff"] = (layout.phoff, "truncated core: program headers")
    middle = layout.phoff + 56 * (layout.phnum // 2) + 7
    cuts["inside-phdrs"] = (middle, "truncated core: program headers")
    cuts["phdrs-end-minus-1"] = (layout.phdrs_end - 1, "truncated core: program headers")
    cuts["phdrs-end"] = (layout.phdrs_end, "truncated core: notes")
    cuts["inside-notes"] = (notes_offset + notes_size // 2, "truncated core: notes")
    cuts["notes-end-minus-1"] = (notes_offset + notes_size - 1, "truncated core: notes")
    return cuts


ELF_CUT_IDS = [
    "0",
    "10",
    "63",
    "64",
    "e_phoff",
    "inside-phdrs",
    "phdrs-end-minus-1",
    "phdrs-end",
    "inside-notes",
    "notes-end-minus-1",
]
PAGING_CUT_IDS = [
    "0",
    "10",
    "63",
    "64-at-shdr0",
    "inside-shdr0",
    "after-shdr0",
    "e_phoff",
    "inside-phdrs",
    "phdrs-end-minus-1",
    "phdrs-end",
    "inside-notes",
    "notes-end-minus-1",
]


@pytest.mark.parametrize(
    ("dump", "cut"),
    [(ELF_DUMP, c) for c in ELF_CUT_IDS] + [(PAGING_DUMP, c) for c in PAGING_CUT_IDS],
    ids=[f"elf-{c}" for c in ELF_CUT_IDS] + [f"paging-{c}" for c in PAGING_CUT_IDS],
)
def test_elf_cut_in_headers(corpus: Corpus, tmp_path: Path, dump: str, cut: str, capsys) -> None:
    size, what = elf_cuts(elf_layout(corpus.dump(dump)))[cut]
    core = cut_copy(corpus.dump(dump), tmp_path / f"cut-{size}", size)
    assert_rejected(corpus.system_map, core, f"{core}: {what}", capsys)


@pytest.mark.parametrize("dump", [ELF_DUMP, PAGING_DUMP], ids=["elf", "paging"])
@pytest.mark.parametrize("into", [0, 1, 1 << 20], ids=["data-start", "data+1", "data+1MiB"])
def test_elf_cut_in_data_opens_truncated(
    corpus: Corpus, tmp_path: Path, dump: str, into: int
) -> None:
    layout = elf_layout(corpus.dump(dump))
    core = cut_copy(corpus.dump(dump), tmp_path / "cut", layout.data + into)
    assert_opens_truncated(corpus.system_map, core)


# -- kdump cut short ----------------------------------------------------------------------------


def kdump_cuts(layout: KdumpLayout) -> dict[str, tuple[int, str]]:
    vmcoreinfo_offset, vmcoreinfo_size = layout.vmcoreinfo
    notes_offset, notes_size = layout.notes
    return {
        "0": (0, "empty file"),
        "100": (100, "truncated core: disk_dump_header"),
        "463": (463, "truncated core: disk_dump_header"),
        "464": (464, "truncated core: kdump_sub_header"),
        "block_size": (layout.block_size, "truncated core: kdump_sub_header"),
        "inside-sub-header": (layout.block_size + 50, "truncated core: kdump_sub_header"),
        "inside-vmcoreinfo": (vmcoreinfo_offset + 100, "truncated core: vmcoreinfo"),
        "vmcoreinfo-end": (vmcoreinfo_offset + vmcoreinfo_size, "truncated core: notes"),
        "notes-end": (notes_offset + notes_size, "truncated core: bitmap"),
        "bitmap-start": (layout.bitmap, "truncated core: bitmap"),
        "inside-bitmap": (layout.bitmap + 5000, "truncated core: bitmap"),
        "descriptors-start": (layout.descriptors, "truncated core: page descriptors"),
        "inside-descriptors": (
            layout.descriptors + 24 * (layout.dumped_pages // 2) + 5,
            "truncated core: page descriptors",
        ),
        "descriptors-end-minus-1": (
            layout.descriptors_end - 1,
            "truncated core: page descriptors",
        ),
    }


KDUMP_CUT_IDS = [
    "0",
    "100",
    "463",
    "464",
    "block_size",
    "inside-sub-header",
    "inside-vmcoreinfo",
    "vmcoreinfo-end",
    "notes-end",
    "bitmap-start",
    "inside-bitmap",
    "descriptors-start",
    "inside-descriptors",
    "descriptors-end-minus-1",
]


@pytest.mark.parametrize("cut", KDUMP_CUT_IDS)
def test_kdump_cut_in_headers(corpus: Corpus, tmp_path: Path, cut: str, capsys) -> None:
    size, what = kdump_cuts(kdump_layout(corpus.dump(KDUMP)))[cut]
    core = cut_copy(corpus.dump(KDUMP), tmp_path / f"cut-{size}", size)
    assert_rejected(corpus.system_map, core, f"{core}: {what}", capsys)


@pytest.mark.parametrize("into", [0, 4096, 1 << 20], ids=["data-start", "data+4K", "data+1MiB"])
def test_kdump_cut_in_data_opens_truncated(corpus: Corpus, tmp_path: Path, into: int) -> None:
    layout = kdump_layout(corpus.dump(KDUMP))
    core = cut_copy(corpus.dump(KDUMP), tmp_path / "cut", layout.descriptors_end + into)
    assert_opens_truncated(corpus.system_map, core)


@pytest.mark.parametrize("blocks", [0xFFFF_FFFF, 1 << 24], ids=["0xffffffff", "2**24"])
def test_kdump_bitmap_past_eof(corpus: Corpus, tmp_path: Path, blocks: int, capsys) -> None:
    """bitmap_blocks made huge: the bitmap is a table pointing outside the file, a bad header
    field rather than a file cut short (SPEC §5: invalid core)."""
    core = tmp_path / "huge-bitmap.kdump"
    shutil.copyfile(corpus.dump(KDUMP), core)
    with core.open("r+b") as f:
        f.seek(424 + 12)
        f.write(struct.pack("<I", blocks))
    with pytest.raises(kvm_rs.KvmError) as raised:
        kvm_rs.Kvm(corpus.system_map, core)
    message = str(raised.value)
    assert message.startswith(f"{core}: invalid core: "), message
    errbuf = bytearray(2048)
    assert kvm_rs.openfiles(corpus.system_map, core, errbuf=errbuf) is None
    assert bytes(errbuf[: errbuf.index(0)]) == os.fsencode(message)


def test_text_file_as_dump(corpus: Corpus, some_file: Path, capsys) -> None:
    assert_rejected(corpus.system_map, some_file, f"{some_file}: not a kernel core file", capsys)


# -- flattened cut short ------------------------------------------------------------------------


def flattened_records(path: Path, count: int) -> list[tuple[int, int]]:
    """(position, size) of the first `count` records after the 4 KiB header."""
    records = []
    with path.open("rb") as f:
        pos = 4096
        for _ in range(count):
            f.seek(pos)
            offset, size = struct.unpack(">qq", f.read(16))
            assert offset >= 0
            records.append((pos, size))
            pos += 16 + size
    return records


def flattened_cuts(path: Path) -> dict[str, tuple[int, str]]:
    (first, first_size), (second, second_size) = flattened_records(path, 2)
    end_marker = path.stat().st_size - 16

    def ends(pos: int) -> str:
        return f"truncated core: flattened stream ends at {pos:#x} without its end marker"

    def runs_past(pos: int) -> str:
        return f"truncated core: flattened record at {pos:#x} runs past the end of the file"

    return {
        "20": (20, "truncated core: flattened header"),
        "header-only": (4096, ends(4096)),
        "inside-record-header": (first + 8, ends(first)),
        "inside-record-data": (first + 16 + first_size // 2, runs_past(first)),
        "record-boundary": (second, ends(second)),
        "inside-second-record": (second + 16 + second_size - 1, runs_past(second)),
        "no-end-marker": (end_marker, ends(end_marker)),
    }


FLATTENED_CUT_IDS = [
    "20",
    "header-only",
    "inside-record-header",
    "inside-record-data",
    "record-boundary",
    "inside-second-record",
    "no-end-marker",
]


@pytest.mark.parametrize("cut", FLATTENED_CUT_IDS)
def test_flattened_cut_short(corpus: Corpus, tmp_path: Path, cut: str, capsys) -> None:
    size, what = flattened_cuts(corpus.dump(FLATTENED))[cut]
    core = cut_copy(corpus.dump(FLATTENED), tmp_path / f"cut-{size}", size)
    assert_rejected(corpus.system_map, core, f"{core}: {what}", capsys)


# -- random damage (in a child process) ---------------------------------------------------------

FUZZ_ITERATIONS = 200
EXTREMES = [0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 63, (1 << 64) - 1]


def mutate(rng: random.Random, data: bytearray, regions: list[tuple[int, int]]) -> None:
    """1-8 changes inside `regions`: a random byte, or an aligned word set to an extreme."""
    for _ in range(rng.randint(1, 8)):
        start, end = rng.choice(regions)
        at = rng.randrange(start, min(end, len(data)))
        if rng.random() < 0.5:
            data[at] = rng.randrange(256)
        else:
            width = rng.choice([2, 4, 8])
            at -= at % width
            value = rng.choice(EXTREMES) if rng.random() < 0.7 else rng.getrandbits(64)
            data[at : at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


def fuzz_core(
    core: Path, exec_path: Path, workdir: Path, seed: int, size: int, regions
) -> tuple[int, int]:
    """Mutants of the first `size` bytes of `core`, opened with `exec_path`."""
    rng = random.Random(seed)
    base = head(core, size)
    opened = rejected = 0
    for i in range(FUZZ_ITERATIONS):
        data = bytearray(base)
        mutate(rng, data, regions)
        path = workdir / f"mutant-{i}"
        path.write_bytes(data)
        print(f"iteration {i}", flush=True)
        if open_and_use(exec_path, path, ["jiffies", "_stext"], read_at=0xFFFF_FFFF_82A0_79C0):
            opened += 1
        else:
            rejected += 1
        if i % 10 == 0:
            errbuf = bytearray(256)
            kd = kvm_rs.openfiles(exec_path, path, errbuf=errbuf)
            assert kvm_rs.close(kd) == (0 if kd is not None else -1)
        path.unlink()
    return opened, rejected


def open_and_use(exec_path: Path, core: Path, names: list[str], read_at: int | None = None) -> bool:
    """Opens a mutant and uses the handle; False when the open was refused, which must come
    with a message. Anything but a KvmError fails the fuzz loop."""
    try:
        kd = kvm_rs.Kvm(exec_path, core)
    except kvm_rs.KvmError as error:
        assert str(error), "an error without a message"
        return False
    with kd:
        kd.info  # noqa: B018
        kd.nlist(names)
        if read_at is not None:
            with contextlib.suppress(kvm_rs.KvmError):
                kd.read(read_at, 8)
    return True


def fuzz_vmlinux(vmlinux: Path, core: Path, workdir: Path, seed: int) -> tuple[int, int]:
    """Mutates the ELF header, program headers and section headers of a copy of vmlinux in
    place (restoring them after each open), hitting the .symtab header a third of the time."""
    rng = random.Random(seed)
    copy = workdir / "vmlinux"
    shutil.copyfile(vmlinux, copy)
    raw = head(copy, 64)
    phoff, shoff = struct.unpack_from("<QQ", raw, 32)
    phnum, _, shnum = struct.unpack_from("<HHH", raw, 56)
    front_end = max(64, phoff + 56 * phnum)
    front = head(copy, front_end)
    with copy.open("rb") as f:
        f.seek(shoff)
        shdrs = f.read(64 * shnum)
    symtab = next(i for i in range(shnum) if struct.unpack_from("<I", shdrs, 64 * i + 4)[0] == 2)
    opened = rejected = 0
    for i in range(FUZZ_ITERATIONS):
        new_front, new_shdrs = bytearray(front), bytearray(shdrs)
        choice = rng.random()
        if choice < 1 / 3:
            mutate(rng, new_shdrs, [(64 * symtab, 64 * symtab + 64)])
        elif choice < 2 / 3:
            mutate(rng, new_shdrs, [(0, len(shdrs))])
        else:
            mutate(rng, new_front, [(0, 64), (0, front_end)])
        with copy.open("r+b") as f:
            f.write(new_front)
            f.seek(shoff)
            f.write(new_shdrs)
        print(f"iteration {i}", flush=True)
        if open_and_use(copy, core, ["jiffies", "_stext", "init_task"]):
            opened += 1
        else:
            rejected += 1
        with copy.open("r+b") as f:
            f.write(front)
            f.seek(shoff)
            f.write(shdrs)
    return opened, rejected


def run_fuzz_child(tmp_path: Path, *args: str) -> str:
    run = subprocess.run(
        [sys.executable, __file__, *args, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    tail = "\n".join(run.stdout.splitlines()[-3:])
    assert run.returncode == 0, (
        f"fuzz child exited {run.returncode}; last output:\n{tail}\n{run.stderr[-3000:]}"
    )
    last = run.stdout.splitlines()[-1]
    assert last.startswith("done "), last
    return last


@pytest.mark.parametrize("seed", [1, 2], ids=["seed1", "seed2"])
@pytest.mark.parametrize("dump", [KDUMP, ELF_DUMP], ids=["kdump", "elf"])
def test_fuzz_core_headers(corpus: Corpus, tmp_path: Path, dump: str, seed: int) -> None:
    last = run_fuzz_child(
        tmp_path, "core", str(corpus.dump(dump)), str(corpus.system_map), str(seed)
    )
    opened, rejected = (int(n) for n in last.split()[1:3])
    assert opened + rejected == FUZZ_ITERATIONS


def test_fuzz_vmlinux_headers(corpus: Corpus, tmp_path: Path) -> None:
    last = run_fuzz_child(tmp_path, "vmlinux", str(corpus.vmlinux), str(corpus.dump(KDUMP)), "3")
    opened, rejected = (int(n) for n in last.split()[1:3])
    assert opened + rejected == FUZZ_ITERATIONS
    assert rejected > 0, "no mutation of the vmlinux headers was rejected"


def _main(argv: list[str]) -> int:
    kind, src, other, seed, workdir = argv
    src_path, other_path, work = Path(src), Path(other), Path(workdir)
    if kind == "core":
        raw = head(src_path, 64)
        if raw.startswith(b"\x7fELF"):
            elf = elf_layout(src_path)
            size = 64 << 10
            regions = [(0, elf.notes[0] + elf.notes[1]), (0, 64)]
        else:
            kdump = kdump_layout(src_path)
            # Headers, bitmaps and descriptors, then 64 KiB of page data: mutants can open.
            size = kdump.descriptors_end + (64 << 10)
            regions = [
                (0, 464),
                (kdump.block_size, kdump.notes[0] + kdump.notes[1]),
                (kdump.bitmap, kdump.descriptors),
                (kdump.descriptors, kdump.descriptors_end),
            ]
        opened, rejected = fuzz_core(src_path, other_path, work, int(seed), size, regions)
    else:
        opened, rejected = fuzz_vmlinux(src_path, other_path, work, int(seed))
    print(f"done {opened} {rejected}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
