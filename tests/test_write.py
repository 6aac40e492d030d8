"""kvm_write on copies of real dumps (SPEC §8, §9).

Writes go to copies in tmp_path only; a corpus file is only ever opened read-only (by the
product, for the handles that must refuse to write). The last test of the module checks
that every corpus dump still has the sha256 truth.json records.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import kvm_rs
import pytest

PLAIN_ELF = "boot-nokaslr.qemu-elf.vmcore"
ZLIB_KDUMP = "boot-nokaslr.mdf-d31-zlib.kdump"
COMPRESSED = [
    "boot-nokaslr.mdf-d31-zlib.kdump",
    "boot-nokaslr.mdf-d31-lzo.kdump",
    "boot-nokaslr.mdf-d31-zstd.kdump",
    "boot-kaslr.mdf-d31-snappy.kdump",
    "boot-nokaslr.qemu-kdump-zlib.vmcore",  # flattened
]
START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
PAGE = 4096
PATTERN = bytes(range(0xA0, 0xB0))
CHUNK = 1 << 22


def copy_dump(corpus: Any, name: str, dst: Path) -> Path:
    shutil.copyfile(corpus.dump(name), dst)  # contents only: the copy is ours, writable
    return dst


def symbol(kd: kvm_rs.Kvm, name: str) -> int:
    found = kd.nlist([name])
    assert name in found, f"nlist does not find {name}"
    return found[name]


def differing_offsets(a: Path, b: Path) -> list[int]:
    """File offsets where a and b differ (the files must be the same size)."""
    assert a.stat().st_size == b.stat().st_size
    diffs: list[int] = []
    with open(a, "rb") as fa, open(b, "rb") as fb:
        base = 0
        while True:
            ca = fa.read(CHUNK)
            cb = fb.read(CHUNK)
            if not ca:
                assert not cb
                return diffs
            if ca != cb:
                pairs = enumerate(zip(ca, cb, strict=False))
                diffs.extend(base + i for i, (x, y) in pairs if x != y)
                assert len(diffs) < 10_000, "the files differ in too many places"
            base += len(ca)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def elf_file_offset(path: Path, paddr: int) -> int:
    """The file offset of physical address paddr in an ELF64 LE core (own parser)."""
    with open(path, "rb") as f:
        ehdr = f.read(64)
        phoff = int.from_bytes(ehdr[32:40], "little")
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _, offset, _vaddr, start, filesz, _, _ = struct.unpack_from(
            "<IIQQQQQQ", table, i * phentsize
        )
        if p_type == 1 and start <= paddr < start + filesz:
            return int(offset + paddr - start)
    raise AssertionError(f"no PT_LOAD holds {paddr:#x}")


def kdump_file_offset(path: Path, paddr: int) -> int:
    """The file offset of physical address paddr in an uncompressed kdump (own parser)."""
    with open(path, "rb") as f:
        header = f.read(PAGE)
        block_size, sub_hdr_size, bitmap_blocks = struct.unpack_from("<iii", header, 428)
        f.seek((1 + sub_hdr_size) * block_size)
        bitmaps = f.read(bitmap_blocks * block_size)
        dumpable = bitmaps[len(bitmaps) // 2 :]
        pfn = paddr // block_size
        assert dumpable[pfn // 8] >> (pfn % 8) & 1, f"pfn {pfn:#x} not in the dump"
        index = sum(bin(b).count("1") for b in dumpable[: pfn // 8])
        index += bin(dumpable[pfn // 8] & ((1 << (pfn % 8)) - 1)).count("1")
        f.seek((1 + sub_hdr_size + bitmap_blocks) * block_size + 24 * index)
        offset, size, flags, _ = struct.unpack("<qIIQ", f.read(24))
    assert (size, flags) == (block_size, 0), "page stored compressed"
    return int(offset + paddr % block_size)


def check_round_trip(corpus: Any, original: Path, copy: Path, flags: int, offset_of: Any) -> None:
    """Writes PATTERN at jiffies through a handle opened with flags; a fresh read-only
    handle reads it back; the copy differs from the original in exactly those bytes, at
    the file offset of jiffies' physical address."""
    system_map = str(corpus.system_map)
    with kvm_rs.Kvm(system_map, str(copy), None, flags) as kd:
        jiffies = symbol(kd, "jiffies")
        if flags == os.O_RDWR:
            assert kd.read(jiffies, 16) != PATTERN
        assert kvm_rs.write(kd, jiffies, PATTERN) == 16
        assert kd.write(jiffies, PATTERN) == 16
        assert kd.geterr() == ""
        if flags == os.O_RDWR:
            assert kd.read(jiffies, 16) == PATTERN
    with kvm_rs.Kvm(system_map, str(copy)) as kd, kvm_rs.Kvm(system_map, str(original)) as old:
        assert kd.read(jiffies, 16) == PATTERN
        assert kd.read(jiffies - 16, 16) == old.read(jiffies - 16, 16)
        assert kd.read(jiffies + 16, 16) == old.read(jiffies + 16, 16)
    paddr = jiffies - START_KERNEL_MAP  # nokaslr: phys_base 0
    start = offset_of(copy, paddr)
    assert differing_offsets(original, copy) == list(range(start, start + 16))


def test_write_round_trip_rdwr(corpus: Any, tmp_path: Path) -> None:
    original = corpus.dump(PLAIN_ELF)
    copy = copy_dump(corpus, PLAIN_ELF, tmp_path / "rdwr.vmcore")
    check_round_trip(corpus, original, copy, os.O_RDWR, elf_file_offset)


def test_write_round_trip_wronly(corpus: Any, tmp_path: Path) -> None:
    original = corpus.dump(PLAIN_ELF)
    copy = copy_dump(corpus, PLAIN_ELF, tmp_path / "wronly.vmcore")
    check_round_trip(corpus, original, copy, os.O_WRONLY, elf_file_offset)


def test_write_wronly_handle_cannot_read(corpus: Any, tmp_path: Path) -> None:
    copy = copy_dump(corpus, PLAIN_ELF, tmp_path / "wronly.vmcore")
    with kvm_rs.Kvm(str(corpus.system_map), str(copy), None, os.O_WRONLY) as kd:
        jiffies = symbol(kd, "jiffies")
        assert kd.write(jiffies, PATTERN) == 16
        assert kvm_rs.read(kd, jiffies, bytearray(16)) == -1
        assert kvm_rs.geterr(kd) == "kvm_read: Bad file descriptor"


def test_write_across_pages(corpus: Any, tmp_path: Path) -> None:
    """A write straddling a page boundary of the direct map lands in both pages."""
    copy = copy_dump(corpus, PLAIN_ELF, tmp_path / "cross.vmcore")
    with kvm_rs.Kvm(str(corpus.system_map), str(copy), None, os.O_RDWR) as kd:
        base = int.from_bytes(kd.read(symbol(kd, "page_offset_base"), 8), "little")
        addr = base + 0x20_0000 - 8  # physical 2 MiB - 8: two 4 KiB pages
        assert kd.write(addr, PATTERN) == 16
        assert kd.read(addr, 16) == PATTERN
    start = elf_file_offset(copy, 0x20_0000 - 8)
    with open(copy, "rb") as f:
        f.seek(start)
        assert f.read(16) == PATTERN
    assert set(differing_offsets(corpus.dump(PLAIN_ELF), copy)) <= set(range(start, start + 16))


def test_write_read_only_handle(corpus: Any) -> None:
    """The corpus file itself, opened O_RDONLY (by the product): write refuses, the
    memory reads as before."""
    message = "kvm_write: Bad file descriptor"
    with kvm_rs.Kvm(str(corpus.system_map), str(corpus.dump(PLAIN_ELF))) as kd:
        jiffies = symbol(kd, "jiffies")
        before = kd.read(jiffies, 16)
        assert kvm_rs.write(kd, jiffies, PATTERN) == -1
        assert kvm_rs.geterr(kd) == message
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.write(jiffies, PATTERN)
        assert str(raised.value) == message
        assert kd.read(jiffies, 16) == before


@pytest.mark.parametrize("name", COMPRESSED)
def test_write_compressed_dump(corpus: Any, tmp_path: Path, name: str) -> None:
    message = "kvm_write not implemented for compressed dumps"
    copy = copy_dump(corpus, name, tmp_path / name)
    with kvm_rs.Kvm(str(corpus.system_map), str(copy), None, os.O_RDWR) as kd:
        jiffies = symbol(kd, "jiffies")
        assert kvm_rs.write(kd, jiffies, PATTERN) == -1
        assert kvm_rs.geterr(kd) == message
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.write(jiffies, PATTERN)
        assert str(raised.value) == message
    assert sha256_of(copy) == corpus.dump_truth(name)["sha256"]


def test_write_no_files() -> None:
    message = "kvm_write: no core file (KVM_NO_FILES)"
    kd = kvm_rs.open(None, None, None, kvm_rs.KVM_NO_FILES)
    assert kd is not None
    assert kvm_rs.write(kd, START_KERNEL_MAP, PATTERN) == -1
    assert kvm_rs.geterr(kd) == message
    with pytest.raises(kvm_rs.KvmError) as raised:
        kd.write(START_KERNEL_MAP, PATTERN)
    assert str(raised.value) == message
    assert kvm_rs.close(kd) == 0


@pytest.fixture
def uncompressed_kdump(corpus: Any, tmp_path: Path) -> Path:
    """An uncompressed kdump made by makedumpfile from a copy of the zlib kdump (makedumpfile
    re-filters a kdump; without -c/-l/-p/-z it stores pages uncompressed)."""
    makedumpfile = shutil.which("makedumpfile")
    if makedumpfile is None:
        pytest.skip("makedumpfile is not installed (apt-get install makedumpfile)")
    source = copy_dump(corpus, ZLIB_KDUMP, tmp_path / "source.kdump")
    out = tmp_path / "uncompressed.kdump"
    run = subprocess.run(
        [makedumpfile, "-d", "31", str(source), str(out)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def test_write_round_trip_uncompressed_kdump(
    corpus: Any, tmp_path: Path, uncompressed_kdump: Path
) -> None:
    pristine = tmp_path / "pristine.kdump"
    shutil.copyfile(uncompressed_kdump, pristine)
    with kvm_rs.Kvm(str(corpus.system_map), str(pristine)) as kd:
        assert kd.info.format == "kdump"
        assert kd.info.compression is None
        truth = corpus.dump_truth(ZLIB_KDUMP)["symbols"]
        found = kd.nlist(list(truth))
        for name, facts in truth.items():
            assert kd.read(found[name], 64).hex() == facts["bytes"], name
    check_round_trip(corpus, pristine, uncompressed_kdump, os.O_RDWR, kdump_file_offset)


def test_zz_corpus_unchanged(corpus: Any) -> None:
    """Runs last in this module: every corpus dump still has truth.json's sha256."""
    changed = [
        name
        for name in corpus.dumps
        if sha256_of(corpus.dump(name)) != corpus.dump_truth(name)["sha256"]
    ]
    assert not changed, f"corpus files changed: {changed}"
