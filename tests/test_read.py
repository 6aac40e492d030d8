"""kvm_read on the real-dump corpus (SPEC §3, §6, §8, §9, §10).

Every dump is read with both link-time symbol tables (System.map and the stripped vmlinux)
and compared with truth.json, with the guests' serial console logs, with each other (all
dumps of one boot hold the same memory) and, where drgn is installed, with drgn. Error
cases: pages makedumpfile excluded, non-canonical and null addresses, truncated copies,
KVM_NO_FILES and O_WRONLY handles. Nothing here opens a corpus file for writing: every
truncated or writable file is a copy in tmp_path.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import kvm_rs
import pytest

EXEC_KINDS = ["system.map", "vmlinux"]
RELEASE = "6.1.0-56-amd64"
ZLIB_KDUMP = "boot-nokaslr.mdf-d31-zlib.kdump"
PLAIN_ELF = "boot-nokaslr.qemu-elf.vmcore"
KASLR_KDUMP = "boot-kaslr.mdf-d31-snappy.kdump"
#: Symbols the kernel's own kallsyms does not list (the tables themselves).
NOT_IN_KALLSYMS = {"kallsyms_num_syms", "kallsyms_names"}
#: The canary at the lowest address of every kernel stack (include/linux/magic.h).
STACK_END_MAGIC = 0x57AC6E9D
START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
NON_CANONICAL = 0x0000_8000_0000_0000
PAGE = 4096
UTS_FIELD = 65  # __NEW_UTS_LEN + 1
#: sha256 over the "addr:hex" lines of `page_walked_reads`, pinned from a run that drgn
#: 0.3.0 agreed with byte for byte (checked again whenever drgn is installed).
PINNED_SHA256 = {
    ZLIB_KDUMP: "a60643d58afe2d31d5e669f1fff43abc28002d006725c7d62fabe0e8ae076e68",
    KASLR_KDUMP: "87f3c6bbdd2e0fa5c2c99bfdc832c8b52757c4aafbdcad14ee4138ff46983a75",
}


# -- helpers ---------------------------------------------------------------------------------


def u64(data: bytes, offset: int = 0) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")


def dump_truth(corpus: Any, dump_name: str) -> dict[str, Any]:
    truth: dict[str, Any] = corpus.dump_truth(dump_name)
    return truth


def nokaslr_dumps(corpus: Any) -> list[str]:
    return [n for n in corpus.dumps if not corpus.dump_truth(n)["kaslr"]]


def open_dump(corpus: Any, dump_name: str, exec_kind: str = "system.map") -> kvm_rs.Kvm:
    return kvm_rs.Kvm(str(corpus.exec_path(exec_kind)), str(corpus.dump(dump_name)))


def console_log(corpus: Any, dump_name: str) -> list[str]:
    boot = dump_truth(corpus, dump_name)["boot"]
    text = corpus.path(f"{boot}.console.log").read_text(errors="replace")
    return [line.rstrip("\r\n") for line in text.splitlines()]


def console_command_line(corpus: Any, dump_name: str) -> str:
    lines = [line for line in console_log(corpus, dump_name) if "Command line: " in line]
    assert lines, "the console log prints no 'Command line: ' line"
    return lines[0].split("Command line: ", 1)[1]


def console_banner(corpus: Any, dump_name: str) -> str:
    lines = [line for line in console_log(corpus, dump_name) if line.startswith("Linux version")]
    assert lines, "the console log has no line starting 'Linux version'"
    return lines[0]


def symbol(kd: kvm_rs.Kvm, name: str) -> int:
    found = kd.nlist([name])
    assert name in found, f"nlist does not find {name}"
    return found[name]


def read_u64(kd: kvm_rs.Kvm, addr: int) -> int:
    return u64(kd.read(addr, 8))


def copy_prefix(src: Path, dst: Path, length: int) -> Path:
    """The first `length` bytes of src (opened read-only) into dst."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        left = length
        while left:
            chunk = fin.read(min(left, 1 << 22))
            assert chunk, f"{src} is shorter than {length}"
            fout.write(chunk)
            left -= len(chunk)
    return dst


def c_read(kd: kvm_rs.Kvm, addr: int, size: int) -> tuple[int, bytes]:
    buf = bytearray(size)
    rc = kvm_rs.read(kd, addr, buf)
    return rc, bytes(buf)


def assert_invalid_address(kd: kvm_rs.Kvm, addr: int, size: int = 64) -> None:
    """-1 and `invalid address (0x<hex>)` (C-style), KvmError with .address (Kvm.read)."""
    message = f"invalid address ({addr:#x})"
    rc, _ = c_read(kd, addr, size)
    assert rc == -1
    assert kvm_rs.geterr(kd) == message
    with pytest.raises(kvm_rs.KvmError) as raised:
        kd.read(addr, size)
    assert raised.value.address == addr
    assert str(raised.value) == message
    assert raised.value.message == message
    assert raised.value.hard is False
    assert kd.geterr() == message


# -- ELF and kdump parsing (independent of the product) --------------------------------------


def elf_loads(path: Path) -> list[tuple[int, int, int, int]]:
    """(p_paddr, p_offset, p_filesz, p_vaddr) of every PT_LOAD of an ELF64 LE core with
    e_phnum < 0xffff."""
    with open(path, "rb") as f:
        ehdr = f.read(64)
        phoff = u64(ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        assert phnum != 0xFFFF
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    loads = []
    for i in range(phnum):
        p_type, _flags, offset, vaddr, paddr, filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", table, i * phentsize
        )
        if p_type == 1:
            loads.append((paddr, offset, filesz, vaddr))
    return loads


def elf_phys_offset(loads: list[tuple[int, int, int, int]], paddr: int) -> int:
    for start, offset, filesz, _ in loads:
        if start <= paddr < start + filesz:
            return offset + paddr - start
    raise AssertionError(f"no PT_LOAD holds physical address {paddr:#x}")


def elf_page_walk(path: Path, top_table: int, va: int) -> tuple[list[int], int]:
    """4-level x86_64 walk over the physical PT_LOADs of an ELF core: (table pages, paddr)."""
    loads = elf_loads(path)
    tables = []
    with open(path, "rb") as f:

        def entry(table: int, index: int) -> int:
            f.seek(elf_phys_offset(loads, table + index * 8))
            return u64(f.read(8))

        table = top_table
        for level, shift in enumerate((39, 30, 21, 12)):
            tables.append(table)
            value = entry(table, (va >> shift) & 0x1FF)
            assert value & 1, f"{va:#x} is not mapped"
            frame = value & 0x000F_FFFF_FFFF_F000
            if level in (1, 2) and value & 0x80:  # 1 GiB / 2 MiB page
                size = 1 << shift
                return tables, (frame & ~(size - 1)) + (va & (size - 1))
            table = frame
    return tables, table + (va & 0xFFF)


class KdumpLayout:
    """disk_dump_header (64-bit), both bitmaps and the page descriptors of a kdump file."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            header = f.read(PAGE)
            assert header[:8] == b"KDUMP   "
            self.block_size, sub_hdr_size, bitmap_blocks = struct.unpack_from("<iii", header, 428)
            f.seek((1 + sub_hdr_size) * self.block_size)
            bitmaps = f.read(bitmap_blocks * self.block_size)
            half = len(bitmaps) // 2
            self.ram = bitmaps[:half]
            self.dumpable = bitmaps[half:]
            self.desc_offset = (1 + sub_hdr_size + bitmap_blocks) * self.block_size
            self.pfns = [
                8 * j + i
                for j, byte in enumerate(self.dumpable)
                if byte
                for i in range(8)
                if byte >> i & 1
            ]
            f.seek(self.desc_offset)
            table = f.read(24 * len(self.pfns))
        # page_desc_t: offset (off_t), size (u32), flags (u32), page_flags (u64)
        self.desc = {
            pfn: struct.unpack_from("<qIIQ", table, 24 * i) for i, pfn in enumerate(self.pfns)
        }
        self.desc_end = self.desc_offset + 24 * len(self.pfns)

    def in_ram(self, pfn: int) -> bool:
        return bool(self.ram[pfn // 8] >> (pfn % 8) & 1)

    def is_dumpable(self, pfn: int) -> bool:
        return bool(self.dumpable[pfn // 8] >> (pfn % 8) & 1)

    def excluded_ram(self) -> list[int]:
        return [
            8 * j + i
            for j in range(len(self.dumpable))
            if self.ram[j] & ~self.dumpable[j]
            for i in range(8)
            if (self.ram[j] & ~self.dumpable[j]) >> i & 1
        ]


# -- truth symbols ---------------------------------------------------------------------------


@pytest.mark.parametrize("exec_kind", EXEC_KINDS)
def test_truth_symbols_read(corpus: Any, dump_name: str, exec_kind: str) -> None:
    """nlist finds the 29 truth symbols at their runtime addresses; 64 bytes read there are
    the bytes drgn, crash and libkdumpfile agreed on, through Kvm.read and kvm_rs.read."""
    truth = dump_truth(corpus, dump_name)["symbols"]
    assert len(truth) == 29
    with open_dump(corpus, dump_name, exec_kind) as kd:
        found = kd.nlist(list(truth))
        assert sorted(found) == sorted(truth)
        wrong = []
        for name, facts in truth.items():
            addr = found[name]
            if addr != int(facts["runtime_address"], 16):
                wrong.append(f"{name}: nlist {addr:#x} != {facts['runtime_address']}")
                continue
            data = kd.read(addr, 64)
            rc, buf = c_read(kd, addr, 64)
            if data.hex() != facts["bytes"]:
                wrong.append(f"{name}: Kvm.read {data.hex()} != {facts['bytes']}")
            if rc != 64 or buf != data:
                wrong.append(f"{name}: kvm_rs.read returned {rc}, {buf.hex()}")
        assert not wrong, "\n".join(wrong)
        assert kd.geterr() == ""


def test_saved_command_line(corpus: Any, dump_name: str) -> None:
    """*saved_command_line is the command line the console printed at boot, NUL-ended."""
    expected = console_command_line(corpus, dump_name).encode()
    with open_dump(corpus, dump_name) as kd:
        pointer = read_u64(kd, symbol(kd, "saved_command_line"))
        assert pointer >= 0xFFFF_8000_0000_0000, f"{pointer:#x} is not a kernel address"
        data = kd.read(pointer, len(expected) + 1)
    assert data == expected + b"\0"


def test_init_uts_ns_release(corpus: Any, dump_name: str) -> None:
    """init_uts_ns.name (OFFSET(uts_namespace.name) from VMCOREINFO): sysname Linux,
    release 6.1.0-56-amd64 (= info.osrelease), machine x86_64."""
    with open_dump(corpus, dump_name) as kd:
        offset = int(kd.info.vmcoreinfo["OFFSET(uts_namespace.name)"])
        raw = kd.read(symbol(kd, "init_uts_ns") + offset, 6 * UTS_FIELD)
        osrelease = kd.info.osrelease
    fields = [raw[i * UTS_FIELD : (i + 1) * UTS_FIELD].split(b"\0")[0] for i in range(6)]
    sysname, _nodename, release, version, machine, _domain = fields
    assert sysname == b"Linux"
    assert release == RELEASE.encode()
    assert osrelease == RELEASE
    assert machine == b"x86_64"
    assert version.startswith(b"#1 SMP")
    assert version.decode() in console_banner(corpus, dump_name)


def test_linux_banner_page(corpus: Any, dump_name: str) -> None:
    """4 KiB at linux_banner start with the banner the console printed (and its newline)."""
    banner = console_banner(corpus, dump_name).encode()
    with open_dump(corpus, dump_name) as kd:
        data = kd.read(symbol(kd, "linux_banner"), PAGE)
    assert len(data) == PAGE
    assert data.startswith(banner + b"\n\0")


# -- page-walked addresses -------------------------------------------------------------------


def vmap_area_starts(kd: kvm_rs.Kvm) -> list[int]:
    """va_start of every vmap_area on vmap_area_list, offsets from VMCOREINFO."""
    info = kd.info.vmcoreinfo
    head = int(info["SYMBOL(vmap_area_list)"], 16)
    list_offset = int(info["OFFSET(vmap_area.list)"])
    start_offset = int(info["OFFSET(vmap_area.va_start)"])
    starts = []
    node = read_u64(kd, head)
    while node != head:
        assert len(starts) < 100_000, "vmap_area_list does not come back to its head"
        starts.append(read_u64(kd, node - list_offset + start_offset))
        node = read_u64(kd, node)
    return starts


def init_stack_of(kd: kvm_rs.Kvm) -> int:
    """init_task.stack, found without DWARF: the pointer to init_stack near the start of
    init_task (after thread_info and __state)."""
    init_stack = symbol(kd, "init_stack")
    head = kd.read(symbol(kd, "init_task"), 256)
    for offset in range(0, len(head), 8):
        if u64(head, offset) == init_stack:
            return init_stack
    raise AssertionError("init_task holds no pointer to init_stack in its first 256 bytes")


def page_walked_reads(kd: kvm_rs.Kvm) -> dict[int, bytes]:
    """64 bytes at each vmap area that the dump holds (at least 3), and at init_task's
    stack."""
    vmalloc_base = read_u64(kd, symbol(kd, "vmalloc_base"))
    reads: dict[int, bytes] = {}
    for start in vmap_area_starts(kd):
        # vmalloc space, and the module area above the kernel image
        assert start >= vmalloc_base, f"vmap area {start:#x} below vmalloc_base"
        try:
            reads[start] = kd.read(start, 64)
        except kvm_rs.KvmError as error:
            # ioremapped device memory and filtered pages: soft, with the address
            assert error.message == f"invalid address ({start:#x})"
    in_vmalloc = [a for a in reads if a < START_KERNEL_MAP]
    assert len(in_vmalloc) >= 3, f"only {len(in_vmalloc)} vmalloc addresses readable"
    stack = init_stack_of(kd)
    reads[stack] = kd.read(stack, 64)
    return reads


@pytest.fixture(scope="module")
def vmalloc_reads(corpus: Any) -> dict[int, bytes]:
    """The reference: page-walked reads from the zlib kdump."""
    with open_dump(corpus, ZLIB_KDUMP) as kd:
        assert read_u64(kd, symbol(kd, "vmalloc_base")) == 0xFFFF_C900_0000_0000
        return page_walked_reads(kd)


def test_vmalloc_reads_look_like_stacks(corpus: Any, vmalloc_reads: dict[int, bytes]) -> None:
    """Vmalloc'd task stacks and init_stack carry STACK_END_MAGIC at their lowest address:
    a translation that lands on the wrong page would not."""
    magic = STACK_END_MAGIC.to_bytes(4, "little")
    stacks = [a for a, d in vmalloc_reads.items() if d.startswith(magic)]
    assert any(a < START_KERNEL_MAP for a in stacks), "no vmalloc'd stack found"
    with open_dump(corpus, ZLIB_KDUMP) as kd:
        assert vmalloc_reads[init_stack_of(kd)].startswith(magic)


def test_vmalloc_reads_alike_in_every_nokaslr_dump(
    corpus: Any, vmalloc_reads: dict[int, bytes]
) -> None:
    """Every dump of the nokaslr boot walks the same vmap_area_list and reads the same 64
    bytes at each address (ELF PT_LOADs by virtual address, physical PT_LOADs and kdump
    pages, all through the kernel's page tables)."""
    with open_dump(corpus, ZLIB_KDUMP) as kd:
        reference_starts = vmap_area_starts(kd)
    wrong = []
    for name in nokaslr_dumps(corpus):
        with open_dump(corpus, name) as kd:
            if vmap_area_starts(kd) != reference_starts:
                wrong.append(f"{name}: vmap_area_list differs")
            for addr, expected in vmalloc_reads.items():
                try:
                    data = kd.read(addr, 64)
                except kvm_rs.KvmError as error:
                    wrong.append(f"{name}: {addr:#x}: {error}")
                    continue
                if data != expected:
                    wrong.append(f"{name}: {addr:#x}: {data.hex()} != {expected.hex()}")
    assert not wrong, "\n".join(wrong)


def _pinned_sha256(reads: dict[int, bytes]) -> str:
    text = "".join(f"{a:#x}:{d.hex()}\n" for a, d in sorted(reads.items()))
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("dump", [ZLIB_KDUMP, KASLR_KDUMP])
def test_page_walked_reads_match_drgn(corpus: Any, dump: str) -> None:
    """drgn (an independent reader with its own page-table walker) reads the same bytes at
    the vmalloc and stack addresses; without drgn, the sha256 pinned from such a run."""
    with open_dump(corpus, dump) as kd:
        reads = page_walked_reads(kd)
    try:
        import drgn
    except ImportError:
        assert _pinned_sha256(reads) == PINNED_SHA256[dump]
        return
    prog = drgn.Program()
    prog.set_core_dump(str(corpus.dump(dump)))
    wrong = [
        f"{a:#x}: kvm_rs {d.hex()} != drgn {prog.read(a, 64).hex()}"
        for a, d in sorted(reads.items())
        if prog.read(a, 64) != d
    ]
    assert not wrong, "\n".join(wrong)
    assert _pinned_sha256(reads) == PINNED_SHA256[dump]


# -- addresses the dump does not hold --------------------------------------------------------


@pytest.fixture(scope="module")
def excluded(corpus: Any) -> tuple[int, int]:
    """(pfn, direct-map va) of a RAM page that `-d 31` left out of the zlib kdump, the page
    before it being in the dump."""
    layout = KdumpLayout(corpus.dump(ZLIB_KDUMP))
    candidates = [p for p in layout.excluded_ram() if p > 0 and layout.is_dumpable(p - 1)]
    assert candidates, "no excluded RAM page follows a dumped page"
    pfn = candidates[0]
    assert layout.in_ram(pfn) and not layout.is_dumpable(pfn)
    with open_dump(corpus, ZLIB_KDUMP) as kd:
        page_offset_base = read_u64(kd, symbol(kd, "page_offset_base"))
    return pfn, page_offset_base + pfn * PAGE


def test_excluded_page_is_invalid_address(corpus: Any, excluded: tuple[int, int]) -> None:
    _pfn, va = excluded
    with open_dump(corpus, ZLIB_KDUMP) as kd:
        assert_invalid_address(kd, va)
        assert_invalid_address(kd, va + 100, 8)


def test_excluded_page_is_in_the_unfiltered_elf(corpus: Any, excluded: tuple[int, int]) -> None:
    """The same page is RAM: QEMU's unfiltered ELF dump holds it."""
    _pfn, va = excluded
    with open_dump(corpus, PLAIN_ELF) as kd:
        assert len(kd.read(va, 64)) == 64


def test_read_crossing_into_excluded_page_fails(corpus: Any, excluded: tuple[int, int]) -> None:
    """libkvm's rule: a read that runs into a missing page is -1, even after some bytes."""
    _pfn, va = excluded
    with open_dump(corpus, ZLIB_KDUMP) as kd:
        assert len(kd.read(va - 64, 64)) == 64  # the page before is in the dump
        rc, _ = c_read(kd, va - 64, 128)
        assert rc == -1
        assert re.fullmatch(r"invalid address \(0x[0-9a-f]+\)", kvm_rs.geterr(kd))
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.read(va - 64, 128)
        assert raised.value.address in (va - 64, va)
        assert str(raised.value) == f"invalid address ({raised.value.address:#x})"
        assert raised.value.hard is False


@pytest.mark.parametrize("addr", [NON_CANONICAL, 0], ids=["non-canonical", "null"])
def test_untranslatable_address(corpus: Any, dump_name: str, addr: int) -> None:
    with open_dump(corpus, dump_name) as kd:
        assert_invalid_address(kd, addr)


def test_invalid_address_is_soft(corpus: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Soft errors never go to stderr, even with the Sun convention's errstr."""
    kd = kvm_rs.open(str(corpus.system_map), str(corpus.dump(ZLIB_KDUMP)), errstr="prog")
    assert kd is not None
    try:
        capsys.readouterr()
        assert kvm_rs.read(kd, NON_CANONICAL, bytearray(8)) == -1
        assert capsys.readouterr().err == ""
        assert kvm_rs.geterr(kd) == f"invalid address ({NON_CANONICAL:#x})"
    finally:
        assert kvm_rs.close(kd) == 0


def test_errors_are_sticky(corpus: Any) -> None:
    with open_dump(corpus, ZLIB_KDUMP) as kd:
        assert kvm_rs.read(kd, 0, bytearray(8)) == -1
        assert kvm_rs.read(kd, symbol(kd, "jiffies"), bytearray(8)) == 8
        assert kvm_rs.geterr(kd) == "invalid address (0x0)"


# -- truncated dumps -------------------------------------------------------------------------

#: Where the truncated ELF copy ends, as a physical address: after the kernel image and the
#: page-table pages that map it and the low direct map, inside a 2 MiB direct-map page.
ELF_CUT_PADDR = 0x540_0800
#: Physical RAM well after the cut.
ELF_AFTER_CUT_PADDR = 0xE00_0000


@pytest.fixture(scope="module")
def truncated_elf(corpus: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = corpus.dump(PLAIN_ELF)
    offset = elf_phys_offset(elf_loads(src), ELF_CUT_PADDR)
    return copy_prefix(src, tmp_path_factory.mktemp("trunc") / "elf.vmcore", offset)


def test_truncated_elf_cut_is_where_intended(corpus: Any) -> None:
    """Preconditions of the truncated-ELF tests, from the intact file: the page tables that
    map the bytes just before the cut lie before it; the bytes after it are RAM."""
    src = corpus.dump(PLAIN_ELF)
    top = int(corpus.dump_truth(PLAIN_ELF)["vmcoreinfo_SYMBOL_swapper_pg_dir"], 16)
    top -= START_KERNEL_MAP  # phys_base 0
    direct = 0xFFFF_8880_0000_0000
    tables, paddr = elf_page_walk(src, top, direct + ELF_CUT_PADDR - 16)
    assert paddr == ELF_CUT_PADDR - 16
    assert max(tables) < ELF_CUT_PADDR - PAGE
    elf_phys_offset(elf_loads(src), ELF_AFTER_CUT_PADDR)  # in a PT_LOAD


def test_truncated_elf(corpus: Any, truncated_elf: Path) -> None:
    """Opens; info.truncated; what lies before EOF reads as in the intact dump; a read past
    EOF is -1 with the hard error `short read`."""
    truth = dump_truth(corpus, PLAIN_ELF)["symbols"]
    with (
        open_dump(corpus, PLAIN_ELF) as intact,
        kvm_rs.Kvm(str(corpus.system_map), str(truncated_elf)) as kd,
    ):
        assert kd.info.truncated is True
        assert intact.info.truncated is False
        found = kd.nlist(list(truth))
        for name, facts in truth.items():
            assert kd.read(found[name], 64).hex() == facts["bytes"], name
        page_offset_base = read_u64(kd, symbol(kd, "page_offset_base"))
        low = page_offset_base + 0x1000
        assert kd.read(low, PAGE) == intact.read(low, PAGE)

        after = page_offset_base + ELF_AFTER_CUT_PADDR
        assert len(intact.read(after, 64)) == 64
        rc, _ = c_read(kd, after, 64)
        assert rc == -1
        assert kvm_rs.geterr(kd) == "short read"
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.read(after, 64)
        assert str(raised.value) == "short read"
        assert raised.value.hard is True


def test_truncated_elf_read_across_eof(corpus: Any, truncated_elf: Path) -> None:
    """SPEC §8: a truncated dump gives the bytes before EOF, and the error `short read`."""
    with (
        open_dump(corpus, PLAIN_ELF) as intact,
        kvm_rs.Kvm(str(corpus.system_map), str(truncated_elf)) as kd,
    ):
        addr = read_u64(kd, symbol(kd, "page_offset_base")) + ELF_CUT_PADDR - 16
        before_eof = intact.read(addr, 16)
        buf = bytearray(b"\xee" * 64)
        rc = kvm_rs.read(kd, addr, buf)
        assert (rc, kvm_rs.geterr(kd)) == (16, "short read")
        assert bytes(buf[:16]) == before_eof
        # The Pythonic read raises, and the bytes before EOF travel with the error.
        with pytest.raises(kvm_rs.KvmError, match=r"^short read$") as raised:
            kd.read(addr, 64)
        assert raised.value.partial == before_eof


def test_truncated_elf_before_the_banner_segment(corpus: Any, tmp_path: Path) -> None:
    """Cut inside the first PT_LOAD (low memory), before the PT_LOAD holding linux_banner's
    physical page: the open works, and linux_banner cannot be read."""
    src = corpus.dump(PLAIN_ELF)
    loads = elf_loads(src)
    banner_paddr = int(dump_truth(corpus, PLAIN_ELF)["symbols"]["linux_banner"]["nm_address"], 16)
    banner_paddr -= START_KERNEL_MAP
    first_ram = min(loads)
    banner_load = next(ld for ld in loads if ld[0] <= banner_paddr < ld[0] + ld[2])
    assert banner_load != first_ram
    cut = first_ram[1] + first_ram[2] // 2
    assert cut < banner_load[1]
    copy = copy_prefix(src, tmp_path / "low.vmcore", cut)
    with kvm_rs.Kvm(str(corpus.system_map), str(copy)) as kd:
        assert kd.info.truncated is True
        banner = symbol(kd, "linux_banner")
        assert kvm_rs.read(kd, banner, bytearray(64)) == -1
        assert kvm_rs.geterr(kd) == "short read"
        with pytest.raises(kvm_rs.KvmError, match=r"^short read$"):
            kd.read(banner, 64)


@pytest.fixture(scope="module")
def truncated_kdump(corpus: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A copy of the zlib kdump cut in the middle of one page's compressed data (headers,
    bitmaps and page descriptors intact); returns (path, pfn of that page)."""
    src = corpus.dump(ZLIB_KDUMP)
    layout = KdumpLayout(src)
    zero_page = layout.desc[layout.pfns[0]][0]  # the shared zero page's data comes first
    pfn = next(p for p in layout.pfns if p >= 0x5400 and layout.desc[p][0] != zero_page)
    offset, size, _flags, _ = layout.desc[pfn]
    cut = offset + size // 2
    assert cut > layout.desc_end
    path = copy_prefix(src, tmp_path_factory.mktemp("trunc") / "cut.kdump", cut)
    return path, pfn


def test_truncated_kdump_is_truncated(corpus: Any, truncated_kdump: tuple[Path, int]) -> None:
    """SPEC §5: a dump whose data is cut short opens, and info says it is truncated."""
    path, _pfn = truncated_kdump
    with kvm_rs.Kvm(str(corpus.system_map), str(path)) as kd:
        assert kd.info.format == "kdump"
        assert kd.info.truncated is True


def test_truncated_kdump_reads(corpus: Any, truncated_kdump: tuple[Path, int]) -> None:
    """Pages before the cut read as in the intact dump; the page cut in half and a later
    page whose data lies wholly past EOF are -1 with `short read`."""
    path, pfn = truncated_kdump
    truth = dump_truth(corpus, ZLIB_KDUMP)["symbols"]
    layout = KdumpLayout(corpus.dump(ZLIB_KDUMP))
    zero_page = layout.desc[layout.pfns[0]][0]
    size = path.stat().st_size
    later = next(
        p for p in layout.pfns if p > pfn + 0x100 and layout.desc[p][0] not in (zero_page,)
    )
    assert layout.desc[later][0] >= size
    with (
        open_dump(corpus, ZLIB_KDUMP) as intact,
        kvm_rs.Kvm(str(corpus.system_map), str(path)) as kd,
    ):
        found = kd.nlist(list(truth))
        for name, facts in truth.items():
            assert kd.read(found[name], 64).hex() == facts["bytes"], name
        page_offset_base = read_u64(kd, symbol(kd, "page_offset_base"))
        earlier = page_offset_base + 0x1000
        assert kd.read(earlier, PAGE) == intact.read(earlier, PAGE)
        for cut_pfn in (pfn, later):
            va = page_offset_base + cut_pfn * PAGE
            assert len(intact.read(va, 64)) == 64
            rc, _ = c_read(kd, va, 64)
            assert (rc, kvm_rs.geterr(kd)) == (-1, "short read"), f"pfn {cut_pfn:#x}"
            with pytest.raises(kvm_rs.KvmError) as raised:
                kd.read(va, 64)
            assert str(raised.value) == "short read"
            assert raised.value.hard is True


# -- the dump as its own symbol table; a foreign kallsyms ------------------------------------


def test_core_symbols(corpus: Any, dump_name: str) -> None:
    """CORE_SYMBOLS: the dump's kallsyms finds every truth symbol it lists at its runtime
    address, and the bytes there are the truth bytes."""
    truth = dump_truth(corpus, dump_name)["symbols"]
    with kvm_rs.Kvm(kvm_rs.CORE_SYMBOLS, str(corpus.dump(dump_name))) as kd:
        found = kd.nlist(list(truth))
        assert set(found) == set(truth) - NOT_IN_KALLSYMS
        for name, value in found.items():
            assert value == int(truth[name]["runtime_address"], 16), name
            assert kd.read(value, 64).hex() == truth[name]["bytes"], name


def test_foreign_kallsyms_does_not_match(corpus: Any, dump_name: str) -> None:
    """The 6.18 host's kallsyms with any dump: `<kallsyms>: does not match <dump> (...)`;
    for the unrandomized boot only _stext agrees, so the kallsyms sample decides."""
    kallsyms = str(corpus.kallsyms)
    dump = str(corpus.dump(dump_name))
    with pytest.raises(kvm_rs.KvmError) as raised:
        kvm_rs.Kvm(kallsyms, dump)
    message = str(raised.value)
    assert message.startswith(f"{kallsyms}: does not match {dump} (")
    assert message.endswith(")")
    if not dump_truth(corpus, dump_name)["kaslr"]:
        match = re.search(r" \(kallsyms: (\S+) != (\S+)\)$", message)
        assert match, message
        assert match.group(1) != match.group(2)
    errbuf = bytearray(kvm_rs._POSIX2_LINE_MAX)
    assert kvm_rs.openfiles(kallsyms, dump, None, os.O_RDONLY, errbuf) is None
    assert bytes(errbuf[: errbuf.index(0)]) == os.fsencode(message)


# -- handles that cannot read ----------------------------------------------------------------


def test_read_no_files() -> None:
    message = "kvm_read: no core file (KVM_NO_FILES)"
    kd = kvm_rs.openfiles(None, None, None, kvm_rs.KVM_NO_FILES)
    assert kd is not None
    assert kvm_rs.read(kd, START_KERNEL_MAP, bytearray(8)) == -1
    assert kvm_rs.geterr(kd) == message
    with pytest.raises(kvm_rs.KvmError) as raised:
        kd.read(START_KERNEL_MAP, 8)
    assert str(raised.value) == message
    assert kvm_rs.close(kd) == 0


def test_read_write_only_handle(corpus: Any, tmp_path: Path) -> None:
    copy = tmp_path / "wronly.kdump"
    shutil.copyfile(corpus.dump(ZLIB_KDUMP), copy)
    message = "kvm_read: Bad file descriptor"
    with kvm_rs.Kvm(str(corpus.system_map), str(copy), None, os.O_WRONLY) as kd:
        jiffies = symbol(kd, "jiffies")
        assert kvm_rs.read(kd, jiffies, bytearray(8)) == -1
        assert kvm_rs.geterr(kd) == message
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.read(jiffies, 8)
        assert str(raised.value) == message
