"""The fleet (../shared/fleet, SPEC §11-§15): real dumps of kernels the corpus does not cover
(Debian 11 5.10, Debian 13 6.12), an arm64 guest (QEMU ELF and QEMU's flattened kdump), and a
2-CPU 1 GiB x86_64 guest as a makedumpfile ELF and as a two-part `makedumpfile --split` kdump.
Every dump is checked against truth.json (bytes drgn, libkdumpfile and crash agree on), the
guests' serial consoles, its System.map and the other dumps of its boot. The damaged variants
(an incomplete kdump, a QEMU ELF without its VMCOREINFO note, kdumps with broken memory) are
copies in a temporary folder: no fleet or corpus file is ever written.

The file formats are parsed here independently of the product (struct and zlib only) to find
the pages to damage and to know what each page holds.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kvm_rs
import pytest
from clirun import run
from console import assert_ordered_subsequence, kernel_lines

if TYPE_CHECKING:
    from conftest import Corpus, Fleet

ARM64_ELF = "arm64-a.qemu-elf.vmcore"
ARM64_KDUMP = "arm64-a.qemu-kdump-zlib.vmcore"
ARM64_DUMPS = [ARM64_ELF, ARM64_KDUMP]
BULLSEYE = "bullseye-a.mdf-d31-zlib.kdump"
TRIXIE = "trixie-a.mdf-d31-zlib.kdump"
BIG_ELF = "big-a.mdf-d31.elf.vmcore"
SPLIT_SET = "big-a.mdf-d31-zlib-split"
PART1 = "big-a.mdf-d31-zlib-split1.kdump"
PART2 = "big-a.mdf-d31-zlib-split2.kdump"
#: Each part's pfn range (README; the kdump sub-header's start_pfn_64..end_pfn_64).
PART_RANGES = {PART1: (0x0, 0x24600), PART2: (0x24600, 0x40000)}
CORPUS_ELF = "boot-nokaslr.qemu-elf.vmcore"
CORPUS_KDUMP = "boot-nokaslr.mdf-d31-zlib.kdump"

OTHER_PART = "not in this part of a split dump"
TABLE_MISSING = "page table missing"
INCOMPLETE = "not in the dump (incomplete)"
EXCLUDED = "excluded"

START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
PAGE = 4096
U64 = (1 << 64) - 1
UTS_FIELD = 65  # __NEW_UTS_LEN + 1: init_uts_ns.name.release is the third field
#: The 64-bit disk_dump_header: status at 424, then block_size, sub_hdr_size, bitmap_blocks,
#: max_mapnr (all u32); the kdump_sub_header (at block_size) has phys_base at 0, split at 12,
#: start_pfn_64/end_pfn_64/max_mapnr_64 at 80/88/96.
STATUS_OFFSET = 424
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
PAGE_DESC = struct.Struct("<QIIQ")  # offset, size, flags, page_flags
#: How many page descriptors (the last ones) the incomplete copy loses.
ZEROED = 100

#: A kernel line as the console prints it: "[    1.234567] text".
#: "ADDR  hex bytes  |ascii|", the `kvm-rs read` hexdump.
HEXDUMP_LINE = re.compile(r"([0-9a-f]{16})  ([0-9a-f]{2}(?: [0-9a-f]{2})*) *  \|(.*)\|")

Outcome = bytes | str  # the bytes read, or the reason the read failed


# -- independent parsing: truth.json, System.map, VMCOREINFO, console logs --------------------


def parse_vmcoreinfo(text: str) -> dict[str, str]:
    entries = {}
    for line in text.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            entries[key] = value
    return entries


def vmcoreinfo(fleet: Fleet, name: str) -> dict[str, str]:
    return parse_vmcoreinfo(fleet.vmcoreinfo_file(name).read_text())


@cache
def system_map(path: Path) -> dict[str, list[tuple[int, str]]]:
    """name → every (link-time address, type letter) System.map gives it."""
    symbols: dict[str, list[tuple[int, str]]] = {}
    with path.open() as f:
        for line in f:
            address, kind, name = line.split()[:3]
            symbols.setdefault(name, []).append((int(address, 16), kind))
    return symbols


def link_address(fleet: Fleet, name: str, symbol: str) -> int:
    [(address, _)] = system_map(fleet.exec_file(name))[symbol]
    return address


def kernel_offset(fleet: Fleet, name: str) -> int:
    return int(fleet.dump_truth(name)["KERNELOFFSET"], 16)


def image_range(fleet: Fleet, name: str) -> tuple[int, int]:
    """[_text, _end) at run time: the kernel image, translated without page tables (§11)."""
    offset = kernel_offset(fleet, name)
    return (
        link_address(fleet, name, "_text") + offset,
        link_address(fleet, name, "_end") + offset,
    )


@dataclass(frozen=True)
class Entry:
    """One truth.json address and the bytes there: a symbol's (`all_parts`: only the whole
    split set reads them) or a `walk` entry's (`walked`: outside the kernel image)."""

    what: str
    address: int
    data: bytes
    all_parts: bool = False
    walked: bool = False


def truth_entries(truth: dict[str, Any]) -> list[Entry]:
    """Every symbol with bytes (or bytes_all_parts) and every walk entry of one dump."""
    entries = []
    for name, symbol in truth["symbols"].items():
        data = symbol.get("bytes") or symbol.get("bytes_all_parts")
        if data:  # arm64's _text has none: its page is not mapped (symbols_without_bytes)
            address = int(symbol["runtime_address"], 16)
            entries.append(Entry(name, address, bytes.fromhex(data), "bytes" not in symbol))
    for walk in truth["walk"]:
        address, data = int(walk["address"], 16), bytes.fromhex(walk["bytes"])
        entries.append(Entry(f"walk {address:#x}", address, data, walked=True))
    return entries


def walked_entries(fleet: Fleet) -> dict[int, bytes]:
    """The split set's addresses outside the kernel image (found by walking page tables):
    the ELF's walk, and the part-1 entries only drgn read (its root from the CPU notes)."""
    found = {e.address: e.data for e in truth_entries(fleet.dump_truth(BIG_ELF)) if e.walked}
    notes_only = fleet.dump_truth(PART1)["walk_root_from_cpu_notes_only"]["entries"]
    for walk in notes_only:
        found.setdefault(int(walk["address"], 16), bytes.fromhex(walk["bytes"]))
    return found


def console_kernel_lines(fleet: Fleet, name: str) -> list[str]:
    """Only the kernel's lines ("[    1.234567] text"), trailing blanks stripped."""
    return kernel_lines(fleet.console_log(name), 200)


def console_command_line(fleet: Fleet, name: str) -> str:
    marker = "] Kernel command line: "
    [line] = [line for line in console_kernel_lines(fleet, name) if marker in line]
    return line.split(marker, 1)[1]


# -- independent parsing: ELF cores and makedumpfile kdumps ------------------------------------


def elf_phdrs(path: Path) -> list[tuple[int, ...]]:
    """(p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align) of an ELF64
    little-endian file."""
    with path.open("rb") as f:
        ehdr = f.read(64)
        assert ehdr[:6] == b"\x7fELF\x02\x01", path
        (phoff,) = struct.unpack_from("<Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return [struct.unpack_from("<IIQQQQQQ", table, i * phentsize) for i in range(phnum)]


def elf_notes(path: Path) -> list[tuple[bytes, int, bytes, int]]:
    """(name without its NUL, n_type, descriptor, file offset of the name) of every note of
    every PT_NOTE of an ELF64 little-endian file."""
    found = []
    with path.open("rb") as f:
        for p_type, _, offset, _, _, filesz, _, _ in elf_phdrs(path):
            if p_type != 4:
                continue
            f.seek(offset)
            notes = f.read(filesz)
            at = 0
            while at + 12 <= len(notes):
                namesz, descsz, n_type = struct.unpack_from("<III", notes, at)
                desc_at = at + 12 + (namesz + 3) // 4 * 4
                name = notes[at + 12 : at + 12 + namesz].rstrip(b"\0")
                found.append((name, n_type, notes[desc_at : desc_at + descsz], offset + at + 12))
                at = desc_at + (descsz + 3) // 4 * 4
    return found


def elf_note_names(path: Path) -> list[tuple[bytes, int]]:
    """(name without its NUL, file offset of the name) of every note of every PT_NOTE."""
    return [(name, at) for name, _, _, at in elf_notes(path)]


class ElfPhysical:
    """Pages of an ELF core by physical address (PT_LOAD p_paddr; file bytes only)."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("rb")
        self.loads = [p for p in elf_phdrs(path) if p[0] == 1]

    def page(self, pfn: int) -> bytes | None:
        """The page at pfn; zeros past p_filesz up to p_memsz (ELF semantics: makedumpfile -E
        leaves the zero pages at a segment's end out of the file); None outside every
        PT_LOAD."""
        paddr = pfn * PAGE
        for _, _, offset, _, start, filesz, memsz, _ in self.loads:
            if start <= paddr and paddr + PAGE <= start + filesz:
                self.file.seek(offset + paddr - start)
                return self.file.read(PAGE)
            if start + filesz <= paddr and paddr + PAGE <= start + memsz:
                return bytes(PAGE)
        return None

    def close(self) -> None:
        self.file.close()


@dataclass(frozen=True)
class KdumpHeader:
    """What the tests use of a 64-bit little-endian makedumpfile kdump (header version 6)."""

    status: int
    block_size: int
    max_mapnr: int
    phys_base: int
    split: bool
    pfn_range: tuple[int, int]
    dumped: bytes  # the second bitmap: bit n set = pfn n is in the dump
    present: bytes  # the first bitmap: bit n set = pfn n is memory
    descriptors: int  # file offset of the page descriptor table

    def is_dumped(self, pfn: int) -> bool:
        return bool(self.dumped[pfn >> 3] >> (pfn & 7) & 1)

    def is_present(self, pfn: int) -> bool:
        return bool(self.present[pfn >> 3] >> (pfn & 7) & 1)

    def dumped_pfns(self) -> list[int]:
        """The pfns this file holds, ascending (a split part: those of its range only)."""
        start, end = self.pfn_range if self.split else (0, self.max_mapnr)
        return [
            i * 8 + bit
            for i, byte in enumerate(self.dumped)
            if byte
            for bit in range(8)
            if byte >> bit & 1 and start <= i * 8 + bit < end
        ]

    def descriptor_offset(self, pfn: int) -> int:
        """File offset of pfn's page descriptor: one per dumped pfn, in pfn order, counted
        from the start of the file's range (a split part's table starts at its start_pfn)."""
        assert self.is_dumped(pfn)
        start = self.pfn_range[0] if self.split else 0
        bits = int.from_bytes(self.dumped, "little") & ((1 << pfn) - 1) & ~((1 << start) - 1)
        return self.descriptors + PAGE_DESC.size * bin(bits).count("1")


def kdump_header(path: Path) -> KdumpHeader:
    with path.open("rb") as f:
        head = f.read(464)
        assert head[:8] == b"KDUMP   ", path
        (version,) = struct.unpack_from("<I", head, 8)
        assert version >= 6, (path, version)
        status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from(
            "<5I", head, STATUS_OFFSET
        )
        assert block_size == PAGE, (path, block_size)
        f.seek(block_size)
        sub = f.read(104)
        phys_base, _, split = struct.unpack_from("<QII", sub, 0)
        start_pfn, end_pfn, max_mapnr_64 = struct.unpack_from("<QQQ", sub, 80)
        max_mapnr = max_mapnr_64 or max_mapnr
        half = bitmap_blocks * block_size // 2
        f.seek((1 + sub_hdr_size) * block_size)
        present = f.read(half)[: (max_mapnr + 7) // 8]
        dumped = f.read(half)[: (max_mapnr + 7) // 8]
    return KdumpHeader(
        status=status,
        block_size=block_size,
        max_mapnr=max_mapnr,
        phys_base=phys_base,
        split=bool(split),
        pfn_range=(start_pfn, end_pfn),
        dumped=dumped,
        present=present,
        descriptors=(1 + sub_hdr_size + bitmap_blocks) * block_size,
    )


def kdump_page(path: Path, header: KdumpHeader, pfn: int) -> bytes:
    """The page makedumpfile wrote for pfn (zlib or stored)."""
    with path.open("rb") as f:
        f.seek(header.descriptor_offset(pfn))
        offset, size, flags, _ = PAGE_DESC.unpack(f.read(PAGE_DESC.size))
        f.seek(offset)
        data = f.read(size)
    assert flags in (0, DUMP_DH_COMPRESSED_ZLIB), (path, pfn, flags)
    page = zlib.decompress(data) if flags else data
    assert len(page) == PAGE
    return page


def image_pfn(fleet: Fleet, name: str, address: int) -> int:
    """The page frame of a kernel image address: va - __START_KERNEL_map + phys_base."""
    phys_base = int(vmcoreinfo(fleet, name)["NUMBER(phys_base)"])
    return ((address - START_KERNEL_MAP + phys_base) & U64) // PAGE


@dataclass(frozen=True)
class X86_64Memory:
    """An independent x86_64 reader of one boot's memory, as SPEC §8/§11 translate: kernel
    image addresses by va - __START_KERNEL_map + phys_base, the rest by the 4-level walk from
    init_top_pgt (1 GiB and 2 MiB pages). `page` gives any page of the whole memory."""

    page: Callable[[int], bytes | None]
    image: tuple[int, int]
    phys_base: int
    top: int  # physical address of init_top_pgt

    def locate(self, address: int) -> tuple[list[int], int]:
        """The pfns of the page tables translating `address` reads, and its physical address."""
        if self.image[0] <= address < self.image[1]:
            return [], (address - START_KERNEL_MAP + self.phys_base) & U64
        tables = []
        table = self.top
        for shift in (39, 30, 21, 12):
            tables.append(table // PAGE)
            data = self.page(table // PAGE)
            assert data is not None, f"page table {table:#x} is not in the whole memory"
            (entry,) = struct.unpack_from("<Q", data, table % PAGE + (address >> shift & 0x1FF) * 8)
            assert entry & 1, f"{address:#x} is not mapped"
            frame = entry & 0x000F_FFFF_FFFF_F000
            if shift == 12 or (shift in (30, 21) and entry & 0x80):
                size = 1 << shift
                return tables, (frame & ~(size - 1)) | (address & (size - 1))
            table = frame
        raise AssertionError("unreachable")

    def expect(
        self, address: int, data: bytes, holds: Callable[[int], bool], missing: str
    ) -> Outcome:
        """What a dump holding only the pages `holds` accepts reads at `address`: `data`
        (checked against the whole memory), else why not where it stops (see `outcome`):
        `page table missing` when the walk needs a table it lacks, `missing` when it lacks
        the page itself."""
        at = address
        while at < address + len(data):
            tables, paddr = self.locate(at)
            size = min(address + len(data) - at, PAGE - paddr % PAGE)
            page = self.page(paddr // PAGE)
            assert page is not None
            chunk = data[at - address : at - address + size]
            assert page[paddr % PAGE : paddr % PAGE + size] == chunk, f"{address:#x}"
            if not all(holds(pfn) for pfn in tables):
                return failure(TABLE_MISSING, address, at)
            if not holds(paddr // PAGE):
                return failure(missing, address, at)
            at += size
        return data


def x86_64_memory(fleet: Fleet, name: str, page: Callable[[int], bytes | None]) -> X86_64Memory:
    info = vmcoreinfo(fleet, name)
    phys_base = int(info["NUMBER(phys_base)"])
    top = (int(info["SYMBOL(init_top_pgt)"], 16) - START_KERNEL_MAP + phys_base) & U64
    return X86_64Memory(page, image_range(fleet, name), phys_base, top)


def core_format(path: Path) -> str:
    with path.open("rb") as f:
        magic = f.read(12)
    if magic.startswith(b"\x7fELF"):
        return "elf"
    if magic.startswith(b"KDUMP   "):
        return "kdump"
    assert magic == b"makedumpfile", path
    return "flattened"


# -- reading through the product ---------------------------------------------------------------


def failure(reason: str, address: int, failed_at: int) -> str:
    """A failed read as `outcome` gives it: the reason, and where when not at the start."""
    return reason if failed_at == address else f"{reason} at {failed_at:#x}"


def outcome(read: Callable[[int, int], bytes], address: int, size: int) -> Outcome:
    """The bytes read, or why not (`failure`, checking the soft error's message; a hard error
    as its message, which no expectation here equals)."""
    try:
        return read(address, size)
    except kvm_rs.KvmError as error:
        if error.hard or error.address is None:
            return f"hard error: {error}"
        assert str(error) == f"invalid address ({error.address:#x})"
        return failure(str(error.reason), address, error.address)


def u64(data: bytes) -> int:
    return int.from_bytes(data[:8], "little")


def read_command_line(kd: kvm_rs.Kvm, fleet: Fleet, name: str, length: int) -> bytes:
    """saved_command_line is a char *: the string it points at, and its NUL."""
    [(address, _)] = system_map(fleet.exec_file(name))["saved_command_line"]
    pointer = u64(kd.read(address + kernel_offset(fleet, name), 8))
    return kd.read(pointer, length + 1)


@pytest.fixture(scope="module")
def handles(fleet: Fleet) -> Iterator[Callable[[str], kvm_rs.Kvm]]:
    """Each fleet dump opened once for the module, with its System.map."""
    opened: dict[str, kvm_rs.Kvm] = {}

    def handle(name: str) -> kvm_rs.Kvm:
        if name not in opened:
            opened[name] = kvm_rs.Kvm(fleet.exec_file(name), fleet.dump(name))
        return opened[name]

    yield handle
    for kd in opened.values():
        kd.close()


# -- every dump: info, symbols, bytes ----------------------------------------------------------


def test_info(fleet: Fleet, handles: Callable[[str], kvm_rs.Kvm], fleet_dump: str) -> None:
    truth = fleet.dump_truth(fleet_dump)
    info = handles(fleet_dump).info
    fmt = core_format(fleet.dump(fleet_dump))
    expected_vmcoreinfo = vmcoreinfo(fleet, fleet_dump)
    assert info.osrelease == truth["vmcoreinfo_OSRELEASE"]
    assert info.kernel_offset == int(truth["KERNELOFFSET"], 16)
    assert info.machine == fleet.machine(fleet_dump)
    assert info.format == fmt
    assert info.compression == (None if fmt == "elf" else "zlib")
    assert info.build_id == expected_vmcoreinfo["BUILD-ID"]
    assert info.page_size == PAGE  # the kernel's, also where QEMU wrote 64 KiB blocks
    assert info.pgtable_levels == 4
    assert info.exec_format == "system.map"
    assert info.vmcoreinfo == expected_vmcoreinfo
    assert info.vmcoreinfo_source == ("note" if fmt == "elf" else "kdump-header")
    assert info.parts == 1
    assert info.pfn_range == PART_RANGES.get(fleet_dump)
    assert info.incomplete is False
    assert info.truncated is False
    assert info.live is False


def test_arm64_qemu_kdump_names_no_machine(fleet: Fleet) -> None:
    """The premise of info.machine "aarch64" for it: QEMU's header says "Unknown"."""
    with fleet.dump(ARM64_KDUMP).open("rb") as f:
        stream = f.read(4096 + 16 + 464)
    # The flattened stream: a 4 KiB header, then (offset, size) big-endian records.
    offset, _size = struct.unpack_from(">qq", stream, 4096)
    header = stream[4096 + 16 :]
    assert (offset, header[:8]) == (0, b"KDUMP   ")
    machine = header[12 + 4 * UTS_FIELD : 12 + 5 * UTS_FIELD].split(b"\0")[0]
    assert machine == b"Unknown"


def test_nlist_system_map(
    fleet: Fleet, handles: Callable[[str], kvm_rs.Kvm], fleet_dump: str
) -> None:
    symbols = fleet.dump_truth(fleet_dump)["symbols"]
    expected = {name: int(s["runtime_address"], 16) for name, s in symbols.items()}
    offset = kernel_offset(fleet, fleet_dump)
    for name, address in expected.items():  # truth's rule: System.map address + KERNELOFFSET
        assert address == link_address(fleet, fleet_dump, name) + offset, name
    assert handles(fleet_dump).nlist(list(expected)) == expected


def test_reads_match_truth(
    fleet: Fleet, handles: Callable[[str], kvm_rs.Kvm], fleet_dump: str
) -> None:
    """Every truth address with `bytes` (for a split part: those truth's readers read from it
    alone, none for part 1; test_split_part_alone covers the rest)."""
    kd = handles(fleet_dump)
    entries = [e for e in truth_entries(fleet.dump_truth(fleet_dump)) if not e.all_parts]
    assert len(entries) >= (0 if fleet_dump == PART1 else 10)
    expected = {(e.what, hex(e.address)): e.data for e in entries}
    got = {(e.what, hex(e.address)): outcome(kd.read, e.address, len(e.data)) for e in entries}
    assert got == expected


def test_saved_command_line(
    fleet: Fleet, handles: Callable[[str], kvm_rs.Kvm], fleet_whole_dump: str
) -> None:
    """The string saved_command_line points at is the console's "Kernel command line:"."""
    name = fleet_whole_dump
    command_line = console_command_line(fleet, name)
    deref = fleet.dump_truth(name)["saved_command_line_deref"]
    if deref:  # {"string": ...}; empty for the arm64 kdump, whose bytes come from the ELF
        assert deref["string"] == command_line
    data = read_command_line(handles(name), fleet, name, len(command_line))
    assert data == command_line.encode() + b"\0"


# -- split dumps (§12) -------------------------------------------------------------------------


def test_split_part_alone(
    fleet: Fleet, handles: Callable[[str], kvm_rs.Kvm], fleet_split_part: str
) -> None:
    """A part alone reads what it holds, and says why it cannot read the rest.

    truth.json's readers (drgn, libkdumpfile) walk the page tables from init_top_pgt even for
    the kernel image; init_top_pgt's page is in part 2, so they read nothing of the image from
    part 1 (`bytes_all_parts` only). SPEC §11 translates the image without page tables
    (va - __START_KERNEL_map + phys_base): a part alone reads every image address whose page
    it holds — the bytes truth gives as `bytes_all_parts`, what the whole set holds — and fails
    the others with `not in this part of a split dump`. Addresses outside the image need the
    walk; from a part alone every walk of truth's addresses needs a table the other part holds
    (part 1 lacks init_top_pgt itself; part 2 the lower tables of the vmalloc and module
    areas) — `page table missing` — except the two walk entries truth reads from part 2.
    The expectations come from an independent walk over the ELF of the same boot.
    """
    part = fleet_split_part
    kd = handles(part)
    start, end = PART_RANGES[part]
    own = truth_entries(fleet.dump_truth(part))
    elf = ElfPhysical(fleet.dump(BIG_ELF))
    try:
        memory = x86_64_memory(fleet, part, elf.page)
        wanted = {e.address: e.data for e in own if not e.walked}
        wanted.update(walked_entries(fleet))
        expected = {
            hex(a): memory.expect(a, d, lambda pfn: start <= pfn < end, OTHER_PART)
            for a, d in wanted.items()
        }
    finally:
        elf.close()
    for entry in own:  # what truth's readers read from this part alone, it reads too
        if not entry.all_parts:
            assert expected[hex(entry.address)] == entry.data, entry.what
    pairs = zip(expected, wanted.values(), strict=True)
    got = {a: outcome(kd.read, int(a, 16), len(d)) for a, d in pairs}
    assert got == expected
    # Each part exercises every case: image bytes read, image page elsewhere, walk refused.
    outcomes = list(expected.values())
    assert OTHER_PART in outcomes
    assert TABLE_MISSING in outcomes
    assert sum(isinstance(o, bytes) for o in outcomes) >= 3
    # The C-style read keeps libkvm's message.
    for reason in (OTHER_PART, TABLE_MISSING):
        address = int(next(a for a, o in expected.items() if o == reason), 16)
        assert kvm_rs.read(kd, address, bytearray(8)) == -1
        assert kvm_rs.geterr(kd) == f"invalid address ({address:#x})"


def test_split_part_physical_pages(
    fleet: Fleet, handles: Callable[[str], kvm_rs.Kvm], fleet_split_part: str
) -> None:
    """read_physical of a part alone: its own pages equal the ELF of the same boot; a page the
    other part holds fails with `not in this part of a split dump`, never `excluded`."""
    part = fleet_split_part
    kd = handles(part)
    header = kdump_header(fleet.dump(part))
    assert header.split
    assert header.pfn_range == PART_RANGES[part]
    assert header.phys_base == int(vmcoreinfo(fleet, part)["NUMBER(phys_base)"])
    other = kdump_header(fleet.dump(PART2 if part == PART1 else PART1))
    own, theirs = header.dumped_pfns(), other.dumped_pfns()
    assert own
    assert theirs
    elf = ElfPhysical(fleet.dump(BIG_ELF))
    try:
        for pfn in own[:: max(1, len(own) // 300)]:
            page = elf.page(pfn)
            assert page is not None, hex(pfn)
            assert outcome(kd.read_physical, pfn * PAGE, PAGE) == page, hex(pfn)
    finally:
        elf.close()
    for pfn in theirs[:: max(1, len(theirs) // 100)]:
        assert outcome(kd.read_physical, pfn * PAGE, 64) == OTHER_PART, hex(pfn)


@pytest.fixture(scope="module", params=["in order", "reversed"])
def split_set(fleet: Fleet, request: pytest.FixtureRequest) -> Iterator[kvm_rs.Kvm]:
    """The split set opened as one dump, its parts given in order and reversed."""
    parts = [fleet.dump(p) for p in fleet.split_sets[SPLIT_SET]["parts"]]
    assert [p.name for p in parts] == [PART1, PART2]
    if request.param == "reversed":
        parts.reverse()
    with kvm_rs.Kvm(fleet.exec_file(PART1), parts) as kd:
        yield kd


def test_split_set_info(fleet: Fleet, split_set: kvm_rs.Kvm) -> None:
    truth = fleet.dump_truth(PART1)
    info = split_set.info
    assert info.parts == 2
    assert info.pfn_range is None
    assert info.osrelease == truth["vmcoreinfo_OSRELEASE"]
    assert info.kernel_offset == int(truth["KERNELOFFSET"], 16)
    assert info.machine == "x86_64"
    assert (info.format, info.compression) == ("kdump", "zlib")
    assert info.vmcoreinfo == vmcoreinfo(fleet, PART1)
    assert info.vmcoreinfo_source == "kdump-header"
    assert info.incomplete is False
    assert info.truncated is False


def test_split_set_reads_equal_the_elf(
    fleet: Fleet, handles: Callable[[str], kvm_rs.Kvm], split_set: kvm_rs.Kvm
) -> None:
    """At every truth address of the boot (bytes and bytes_all_parts, the image and the
    walked areas) the set reads what the -E ELF of the same stopped VM reads, and truth."""
    assert fleet.split_sets[SPLIT_SET]["same_memory_as"] == BIG_ELF
    elf = handles(BIG_ELF)
    wanted: dict[int, bytes] = {}
    for name in (BIG_ELF, PART1, PART2):
        for entry in truth_entries(fleet.dump_truth(name)):
            assert wanted.setdefault(entry.address, entry.data) == entry.data, entry.what
    for address, data in walked_entries(fleet).items():
        assert wanted.setdefault(address, data) == data
    assert len(wanted) >= 35
    from_set = {hex(a): outcome(split_set.read, a, len(d)) for a, d in wanted.items()}
    from_elf = {hex(a): outcome(elf.read, a, len(d)) for a, d in wanted.items()}
    assert from_set == from_elf
    assert from_set == {hex(a): d for a, d in wanted.items()}
    command_line = console_command_line(fleet, PART1)
    assert read_command_line(split_set, fleet, PART1, len(command_line)) == (
        command_line.encode() + b"\0"
    )


def test_split_set_pages_equal_the_elf(fleet: Fleet, split_set: kvm_rs.Kvm) -> None:
    """Every page either part holds reads through the set as in the ELF; a page the dump
    level filtered out (memory, not dumped) is `excluded` in the set."""
    headers = [kdump_header(fleet.dump(p)) for p in (PART1, PART2)]
    elf = ElfPhysical(fleet.dump(BIG_ELF))
    try:
        for header in headers:
            for pfn in header.dumped_pfns():
                page = elf.page(pfn)
                assert page is not None, hex(pfn)
                assert split_set.read_physical(pfn * PAGE, PAGE) == page, hex(pfn)
    finally:
        elf.close()
    for header in headers:
        start, end = header.pfn_range
        excluded = [
            pfn for pfn in range(start, end) if header.is_present(pfn) and not header.is_dumped(pfn)
        ]
        assert len(excluded) > 1000
        for pfn in excluded[:: len(excluded) // 50]:
            assert outcome(split_set.read_physical, pfn * PAGE, 64) == EXCLUDED, hex(pfn)


def test_parts_of_different_dumps_do_not_open(fleet: Fleet, tmp_path: Path) -> None:
    part1 = str(fleet.dump(PART1))
    copy = tmp_path / PART1
    shutil.copyfile(part1, copy)  # the same pfn range twice
    for stranger in (str(fleet.dump(TRIXIE)), str(copy)):
        with pytest.raises(kvm_rs.KvmError) as raised:
            kvm_rs.Kvm(fleet.exec_file(PART1), [part1, stranger])
        message = str(raised.value)
        assert message.startswith(f"{stranger}: not part of the same dump as {part1} ("), message
        assert message.endswith(")"), message


# -- arm64 (§11): the kernel log and the dump's own symbols ------------------------------------


@pytest.mark.parametrize("name", ARM64_DUMPS)
@pytest.mark.parametrize("execfile", ["system.map", "core"])
def test_arm64_dmesg_holds_the_console(
    fleet: Fleet, handles: Callable[[str], kvm_rs.Kvm], name: str, execfile: str
) -> None:
    """Every "[ seconds] text" line of the console, in order (the console also has the init
    script's lines; both sides compared without trailing blanks: the console log is CRLF and
    a pr_cont line such as "Fallback order for Node 0: 0 " ends in a space). With the dump's
    own symbols too: this kernel's kallsyms has no data symbols (see kallsyms_sample), so the
    ring buffer is found from VMCOREINFO (SYMBOL(prb) and its OFFSET/SIZE lines)."""
    if execfile == "core":
        with kvm_rs.Kvm(execfile=kvm_rs.CORE_SYMBOLS, corefile=fleet.dump(name)) as kd:
            log = kd.dmesg()
    else:
        log = handles(name).dmesg()
    lines = [line.rstrip() for line in log]
    assert_ordered_subsequence(console_kernel_lines(fleet, name), lines)


def kallsyms_sample(fleet: Fleet, name: str, count: int) -> list[str]:
    """`count` names spread over the arm64 kernel's own kallsyms, by address.

    The Debian arm64 6.1 kernel is built without CONFIG_KALLSYMS_ALL: its kallsyms (decoded
    from this dump while writing this test: 50336 symbols) holds only the text ranges —
    _stext.._etext and _sinittext.._einittext, plus those two end markers. So it lacks every
    data, rodata and bss symbol (linux_banner, init_uts_ns, init_task, jiffies, prb,
    kallsyms_* tables...), the absolute (A) and weak-object (V) lines, _text (the image
    header before _stext), .exit.text, and the `__efistub_` aliases and `$x`/`$d` mapping
    symbols scripts/kallsyms.c drops. Of the truth symbols only _stext and _etext are in it.
    Every one of its 48946 names that System.map lists once has System.map's value +
    KERNELOFFSET; names listed more than once are left out here (nlist gives one of them).
    """
    symbols = system_map(fleet.exec_file(name))
    ranges = [
        (link_address(fleet, name, "_stext"), link_address(fleet, name, "_etext")),
        (link_address(fleet, name, "_sinittext"), link_address(fleet, name, "_einittext")),
    ]
    eligible = sorted(
        (values[0][0], symbol)
        for symbol, values in symbols.items()
        if len(values) == 1
        and (symbol in ("_etext", "_einittext") or any(a <= values[0][0] < b for a, b in ranges))
        and not symbol.startswith("__efistub_")
        and "$" not in symbol
    )
    assert len(eligible) > 40000
    return [eligible[i * len(eligible) // count][1] for i in range(count)]


@pytest.mark.parametrize("name", ARM64_DUMPS)
def test_arm64_nlist_core_symbols(fleet: Fleet, name: str) -> None:
    offset = kernel_offset(fleet, name)
    sample = kallsyms_sample(fleet, name, 200)
    truth_names = list(fleet.dump_truth(name)["symbols"])
    in_kallsyms = [n for n in ("_stext", "_etext") if n in truth_names]
    names = [*sample, *in_kallsyms]
    with kvm_rs.Kvm(execfile=kvm_rs.CORE_SYMBOLS, corefile=fleet.dump(name)) as kd:
        assert kd.info.exec_format == "kallsyms"
        found = kd.nlist(names)
        assert found == {n: link_address(fleet, name, n) + offset for n in names}
        # The others are not in the kernel's tables: not found, or (from VMCOREINFO) right.
        others = kd.nlist([n for n in truth_names if n not in names])
    for symbol, value in others.items():
        assert value == link_address(fleet, name, symbol) + offset, symbol


#: The x86_64 kernels have CONFIG_KALLSYMS_ALL. 6.1's kallsyms does not list its own tables;
#: 6.12's does (both decoded from the dumps while writing this test).
NOT_IN_KALLSYMS = {BIG_ELF: {"kallsyms_num_syms", "kallsyms_names"}, TRIXIE: set()}


@pytest.mark.parametrize("name", sorted(NOT_IN_KALLSYMS))
def test_x86_64_nlist_core_symbols(fleet: Fleet, name: str) -> None:
    symbols = fleet.dump_truth(name)["symbols"]
    expected = {
        n: int(s["runtime_address"], 16)
        for n, s in symbols.items()
        if n not in NOT_IN_KALLSYMS[name]
    }
    with kvm_rs.Kvm(execfile=kvm_rs.CORE_SYMBOLS, corefile=fleet.dump(name)) as kd:
        assert kd.nlist(list(expected)) == expected


def test_core_symbols_need_a_kernel_from_6_0(fleet: Fleet) -> None:
    path = str(fleet.dump(BULLSEYE))
    assert not any(k.startswith("SYMBOL(kallsyms_") for k in vmcoreinfo(fleet, BULLSEYE))
    message = (
        f"{path}: no kallsyms tables in VMCOREINFO (kernel before 6.0): "
        "give a System.map, vmlinux or kallsyms file"
    )
    with pytest.raises(kvm_rs.KvmError) as raised:
        kvm_rs.Kvm(corefile=path, execfile=kvm_rs.CORE_SYMBOLS)
    assert str(raised.value) == message
    errbuf = bytearray(kvm_rs._POSIX2_LINE_MAX)
    assert kvm_rs.openfiles(kvm_rs.CORE_SYMBOLS, path, None, errbuf=errbuf) is None
    assert errbuf[: errbuf.index(0)].decode() == message


# -- VMCOREINFO: note, kdump header, given, found in memory (§13) ------------------------------


@pytest.fixture(scope="session")
def elf_without_vmcoreinfo(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the corpus's QEMU ELF whose VMCOREINFO note is renamed XMCOREINFO: a dump
    from QEMU without `-device vmcoreinfo`, as far as the notes go."""
    copy = tmp_path_factory.mktemp("no-vmcoreinfo") / CORPUS_ELF
    shutil.copyfile(corpus.dump(CORPUS_ELF), copy)
    [offset] = [at for name, at in elf_note_names(copy) if name == b"VMCOREINFO"]
    with copy.open("r+b") as f:
        f.seek(offset)
        assert f.read(1) == b"V"
        f.seek(offset)
        f.write(b"X")
    names = [name for name, _ in elf_note_names(copy)]
    assert b"VMCOREINFO" not in names
    assert names.count(b"XMCOREINFO") == 1
    return copy


def corpus_banner(corpus: Corpus, name: str) -> tuple[int, bytes]:
    symbol = corpus.dump_truth(name)["symbols"]["linux_banner"]
    return int(symbol["runtime_address"], 16), bytes.fromhex(symbol["bytes"])


def test_vmcoreinfo_found_in_memory(corpus: Corpus, elf_without_vmcoreinfo: Path) -> None:
    """The kernel's own vmcoreinfo_data page (page-aligned, starting OSRELEASE=) is found."""
    address, banner = corpus_banner(corpus, CORPUS_ELF)
    expected = parse_vmcoreinfo(corpus.vmcoreinfo_file(CORPUS_ELF).read_text())
    with kvm_rs.Kvm(corpus.system_map, elf_without_vmcoreinfo) as kd:
        info = kd.info
        assert info.vmcoreinfo_source == "memory"
        assert info.vmcoreinfo == expected
        assert info.osrelease == corpus.dump_truth(CORPUS_ELF)["vmcoreinfo_OSRELEASE"]
        assert info.kernel_offset == 0
        assert kd.read(address, len(banner)) == banner


@pytest.mark.parametrize("form", [str, bytes])
def test_vmcoreinfo_given(corpus: Corpus, elf_without_vmcoreinfo: Path, form: type) -> None:
    address, banner = corpus_banner(corpus, CORPUS_ELF)
    text = corpus.vmcoreinfo_file(CORPUS_ELF).read_text()
    given = text if form is str else text.encode()
    for core in (elf_without_vmcoreinfo, corpus.dump(CORPUS_ELF)):
        with kvm_rs.Kvm(corpus.system_map, core, vmcoreinfo=given) as kd:
            assert kd.info.vmcoreinfo_source == "given"
            assert kd.info.vmcoreinfo == parse_vmcoreinfo(text)
            assert kd.read(address, len(banner)) == banner
    kd = kvm_rs.openfiles(corpus.system_map, elf_without_vmcoreinfo, None, vmcoreinfo=given)
    assert kd is not None
    assert kd.info.vmcoreinfo_source == "given"
    assert kvm_rs.close(kd) == 0


def test_vmcoreinfo_sources_of_unchanged_dumps(corpus: Corpus) -> None:
    for name, source in ((CORPUS_ELF, "note"), (CORPUS_KDUMP, "kdump-header")):
        with kvm_rs.Kvm(corpus.system_map, corpus.dump(name)) as kd:
            assert kd.info.vmcoreinfo_source == source, name


# -- an incomplete kdump (§13) -----------------------------------------------------------------


@dataclass(frozen=True)
class Incomplete:
    path: Path
    original: Path
    header: KdumpHeader  # of the original
    zeroed: list[int]  # the pfns whose descriptors the copy lost
    kept: list[int]  # every other dumped pfn


@pytest.fixture(scope="module")
def incomplete(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Incomplete:
    """A copy of a zlib kdump as makedumpfile leaves it when the disk fills: status bit
    DUMP_DH_COMPRESSED_INCOMPLETE set, the last ZEROED page descriptors never written (0)."""
    original = fleet.dump(BULLSEYE)
    header = kdump_header(original)
    assert header.status & DUMP_DH_COMPRESSED_INCOMPLETE == 0
    pfns = header.dumped_pfns()
    kept, zeroed = pfns[:-ZEROED], pfns[-ZEROED:]
    first = header.descriptor_offset(zeroed[0])
    assert first == header.descriptors + PAGE_DESC.size * len(kept)
    copy = tmp_path_factory.mktemp("incomplete") / BULLSEYE
    shutil.copyfile(original, copy)
    with copy.open("r+b") as f:
        f.seek(STATUS_OFFSET)
        f.write(struct.pack("<I", header.status | DUMP_DH_COMPRESSED_INCOMPLETE))
        f.seek(first)
        f.write(bytes(PAGE_DESC.size * ZEROED))
    return Incomplete(copy, original, header, zeroed, kept)


def test_incomplete_info(fleet: Fleet, incomplete: Incomplete) -> None:
    with kvm_rs.Kvm(fleet.exec_file(BULLSEYE), incomplete.path) as kd:
        assert kd.info.incomplete is True
        assert kd.info.truncated is False
        assert kd.info.osrelease == fleet.dump_truth(BULLSEYE)["vmcoreinfo_OSRELEASE"]


def test_incomplete_missing_pages(fleet: Fleet, incomplete: Incomplete) -> None:
    """The pages it never wrote are missing (not zero, not corrupt); the others read right."""
    with kvm_rs.Kvm(fleet.exec_file(BULLSEYE), incomplete.path) as kd:
        for pfn in incomplete.zeroed:
            assert outcome(kd.read_physical, pfn * PAGE, 64) == INCOMPLETE, hex(pfn)
        kept = incomplete.kept
        for pfn in [*kept[-ZEROED:], *kept[:: len(kept) // 200]]:
            page = kdump_page(incomplete.original, incomplete.header, pfn)
            assert kd.read_physical(pfn * PAGE, PAGE) == page, hex(pfn)
        # Truth's addresses: those whose pages (and page tables) it still holds read right.
        # The kernel allocated page tables high in memory: the walks of the vmemmap and
        # cpu_entry_area entries need a table among the lost pages.
        zeroed = set(incomplete.zeroed)
        header, original = incomplete.header, incomplete.original

        def page(pfn: int) -> bytes | None:
            return kdump_page(original, header, pfn) if header.is_dumped(pfn) else None

        memory = x86_64_memory(fleet, BULLSEYE, page)
        entries = truth_entries(fleet.dump_truth(BULLSEYE))
        expected = {
            e.what: memory.expect(e.address, e.data, lambda pfn: pfn not in zeroed, INCOMPLETE)
            for e in entries
        }
        assert sum(isinstance(o, bytes) for o in expected.values()) >= 30
        got = {e.what: outcome(kd.read, e.address, len(e.data)) for e in entries}
        assert got == expected


def test_incomplete_scan(incomplete: Incomplete) -> None:
    [report] = kvm_rs.scan([incomplete.path])
    assert report.ok, report.error
    assert report.incomplete is True
    assert report.truncated is False
    assert report.readable is True


# -- scan (§12, §15) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet_reports(fleet: Fleet) -> list[kvm_rs.ScanReport]:
    """One scan of every fleet dump (split parts included), no execfile."""
    return kvm_rs.scan([str(fleet.dump(name)) for name in fleet.dumps], threads=2)


def test_scan_fleet(fleet: Fleet, fleet_reports: list[kvm_rs.ScanReport]) -> None:
    """One report per dump, the split set's parts grouped into one at its first part."""
    paths = [str(fleet.dump(name)) for name in fleet.dumps]
    grouped = [p for p in paths if not p.endswith(PART2)]
    assert [r.path for r in fleet_reports] == grouped
    for report in fleet_reports:
        name = Path(report.path).name
        truth = fleet.dump_truth(name)
        assert report.ok, report.error
        assert report.error is None
        assert report.readable is True, report.reason
        assert report.reason is None
        assert report.osrelease == truth["vmcoreinfo_OSRELEASE"]
        assert report.kernel_offset == int(truth["KERNELOFFSET"], 16)
        assert report.machine == fleet.machine(name)
        assert report.incomplete is False
        assert report.truncated is False
        assert report.pfn_range is None
        # The files of the report, in input order (a sequence: the contract says list).
        if name == PART1:
            assert list(report.parts) == [str(fleet.dump(PART1)), str(fleet.dump(PART2))]
        else:
            assert list(report.parts) == [report.path]
    [bullseye] = [r for r in fleet_reports if r.path.endswith(BULLSEYE)]
    assert bullseye.exec_format is None  # pre-6.0: described without symbols, still ok


def test_scan_split_part_alone(fleet: Fleet, fleet_split_part: str) -> None:
    """A part alone is ok, with its range; its memory is readable when init_uts_ns's page is
    in it (part 2), not otherwise (part 1)."""
    path = str(fleet.dump(fleet_split_part))
    [report] = kvm_rs.scan([path])
    assert report.ok, report.error
    assert report.path == path
    assert list(report.parts) == [path]
    assert report.pfn_range == PART_RANGES[fleet_split_part]
    release = int(vmcoreinfo(fleet, fleet_split_part)["SYMBOL(init_uts_ns)"], 16)
    start, end = PART_RANGES[fleet_split_part]
    holds = start <= image_pfn(fleet, fleet_split_part, release) < end
    assert holds == (fleet_split_part == PART2)
    assert report.readable is holds
    assert (report.reason is None) is holds


def replace_page(path: Path, header: KdumpHeader, pfn: int, data: bytes, flags: int) -> None:
    """Appends `data` to the kdump at `path` and points pfn's descriptor at it."""
    with path.open("r+b") as f:
        at = f.seek(0, 2)
        f.write(data)
        f.seek(header.descriptor_offset(pfn))
        _, _, _, page_flags = PAGE_DESC.unpack(f.read(PAGE_DESC.size))
        f.seek(header.descriptor_offset(pfn))
        f.write(PAGE_DESC.pack(at, len(data), flags, page_flags))


@pytest.mark.parametrize("damage", ["page tables", "release", "corrupt page"])
def test_scan_memory_not_readable(fleet: Fleet, tmp_path: Path, damage: str) -> None:
    """Headers intact, memory not: the top-level page table zeroed; init_uts_ns's page holding
    another release; or its compressed data garbage. Each is `readable` False, with why."""
    original = fleet.dump(TRIXIE)
    header = kdump_header(original)
    info = vmcoreinfo(fleet, TRIXIE)
    copy = tmp_path / TRIXIE
    shutil.copyfile(original, copy)
    uts = int(info["SYMBOL(init_uts_ns)"], 16)
    uts_pfn = image_pfn(fleet, TRIXIE, uts)
    if damage == "page tables":
        top = image_pfn(fleet, TRIXIE, int(info["SYMBOL(init_top_pgt)"], 16))
        assert header.is_dumped(top)
        assert top != uts_pfn
        replace_page(copy, header, top, bytes(PAGE), 0)
    elif damage == "release":
        page = bytearray(kdump_page(original, header, uts_pfn))
        # init_uts_ns.name (a new_utsname: sysname, nodename, release, ...)
        at = uts % PAGE + int(info["OFFSET(uts_namespace.name)"]) + 2 * UTS_FIELD
        release = info["OSRELEASE"].encode()
        assert page[at : at + len(release) + 1] == release + b"\0"
        page[at] = ord("9")
        replace_page(copy, header, uts_pfn, zlib.compress(bytes(page)), DUMP_DH_COMPRESSED_ZLIB)
    else:
        replace_page(copy, header, uts_pfn, b"\xff" * 200, DUMP_DH_COMPRESSED_ZLIB)
    [report] = kvm_rs.scan([copy])
    assert report.path == str(copy)
    assert report.readable is False
    assert report.reason


# -- the command line (§15) --------------------------------------------------------------------


def json_records(stdout: str, kind: str) -> list[dict[str, Any]]:
    """The JSON lines of one kind (§15 names each object's `kind`)."""
    records = [json.loads(line) for line in stdout.splitlines()]
    return [r for r in records if r.get("kind", kind) == kind]


def as_int(value: int | str) -> int:
    """An address or offset: §15 writes addresses as "0x…" strings."""
    return int(value, 16) if isinstance(value, str) else value


def test_cli_info_split_set(fleet: Fleet) -> None:
    truth = fleet.dump_truth(PART1)
    args = ("-M", fleet.dump(PART1), "-M", fleet.dump(PART2), "-N", fleet.exec_file(PART1))
    result = run("info", *args, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    [info] = json_records(result.stdout, "info")
    assert info["osrelease"] == truth["vmcoreinfo_OSRELEASE"]
    assert as_int(info["kernel_offset"]) == int(truth["KERNELOFFSET"], 16)
    assert info["machine"] == "x86_64"
    assert info["parts"] == [str(fleet.dump(PART1)), str(fleet.dump(PART2))]
    assert info["pfn_range"] is None


@pytest.mark.parametrize("name", ARM64_DUMPS)
def test_cli_read_arm64(fleet: Fleet, name: str) -> None:
    symbol = fleet.dump_truth(name)["symbols"]["linux_banner"]
    result = run("read", "-M", fleet.dump(name), "-N", fleet.exec_file(name), "linux_banner", "64")
    assert result.returncode == 0, result.stderr
    start = int(symbol["runtime_address"], 16)
    data = b""
    for line in result.stdout.splitlines():
        match = HEXDUMP_LINE.fullmatch(line)
        assert match, f"not a hexdump line: {line!r}"
        assert int(match.group(1), 16) == start + len(data), line
        data += bytes.fromhex(match.group(2))
    assert data == bytes.fromhex(symbol["bytes"])


def test_cli_scan_fleet_folder(fleet: Fleet) -> None:
    """The unpacked fleet folder as a crash folder: every dump reported once (the split set
    once, both parts), the text files beside them (System.map, logs, JSON) skipped."""
    result = run("scan", fleet.dir, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    reports = json_records(result.stdout, "report")
    wanted = [name for name in fleet.dumps if name != PART2]
    assert sorted(Path(r["path"]).name for r in reports) == sorted(wanted)
    for report in reports:
        name = Path(report["path"]).name
        assert report["ok"] is True, report
        assert report["readable"] is True, report
        assert report["osrelease"] == fleet.dump_truth(name)["vmcoreinfo_OSRELEASE"]
        expected_parts = [PART1, PART2] if name == PART1 else [name]
        assert sorted(Path(p).name for p in report["parts"]) == expected_parts
