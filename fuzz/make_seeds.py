#!/usr/bin/env python3
"""Regenerates the fuzz seeds, fuzz/seeds/<target>/, from the real dumps of the corpus and
the fleet (unpacked first by `python3 ../shared/corpus/unpack.py` and
`python3 ../shared/fleet/unpack.py`, to ~/.cache/kvm-rs-corpus and ~/.cache/kvm-rs-fleet, or
$KVM_RS_CORPUS_DIR and $KVM_RS_FLEET_DIR).

Real dumps are hundreds of MiB; a seed must be a few KiB. So the seeds are either cuts (the
first KiB of a file: headers and notes, the rest missing) or small files rebuilt from real
bytes: a kdump file keeping the real header, sub-header (VMCOREINFO, notes) and a few real
compressed pages at their real page frames (the pages VMCOREINFO's symbols lie in and the
page tables that map them), an ELF vmcore with a few real pages, the first entries of the
real kallsyms tables laid out compactly, and kernel log rings built with the real kernels'
OFFSET()/SIZE() lines. Everything is deterministic: running it again writes the same bytes.

    python3 fuzz/make_seeds.py          # from the checkout's root or from fuzz/
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "seeds"
CORPUS = Path(os.environ.get("KVM_RS_CORPUS_DIR", Path.home() / ".cache/kvm-rs-corpus"))
FLEET = Path(os.environ.get("KVM_RS_FLEET_DIR", Path.home() / ".cache/kvm-rs-fleet"))

#: Where the decoder targets (kallsyms, dmesg) put their fake kernel memory; the same
#: constant as MEMORY_BASE in src/lib.rs.
MEMORY_BASE = 0xC000_0000
PAGE = 4096
X86_IMAGE_BASE = 0xFFFF_FFFF_8000_0000  # __START_KERNEL_map
X86_DIRECT_MAP = 0xFFFF_8880_0000_0000  # page_offset_base without KASLR

written: dict[str, int] = {}


def put(target: str, name: str, data: bytes) -> None:
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    written[f"{target}/{name}"] = len(data)


def head(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


def vmcoreinfo_of(text: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.decode(errors="replace").splitlines():
        key, eq, value = line.partition("=")
        if eq and key not in out:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------
# ELF vmcores: physical memory by PT_LOAD, and a small ELF core of chosen pages.


class ElfCore:
    """A 64-bit little-endian ELF core, read by physical address."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = path.open("rb")
        eh = self.f.read(64)
        self.machine = struct.unpack_from("<H", eh, 18)[0]
        phoff = struct.unpack_from("<Q", eh, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        self.f.seek(phoff)
        raw = self.f.read(phentsize * phnum)
        self.phdrs = [struct.unpack_from("<IIQQQQQQ", raw, i * 56) for i in range(phnum)]
        note = next(p for p in self.phdrs if p[0] == 4)
        self.f.seek(note[2])
        self.notes = self.f.read(note[5])

    def phys(self, pa: int, size: int = PAGE) -> bytes | None:
        for p_type, _, off, _, paddr, filesz, _, _ in self.phdrs:
            if p_type == 1 and paddr <= pa and pa + size <= paddr + filesz:
                self.f.seek(off + pa - paddr)
                return self.f.read(size)
        return None


def mini_elf(
    notes: bytes,
    pages: list[tuple[int, int, bytes]],
    machine: int,
    pn_xnum: bool = False,
) -> bytes:
    """An ELF64 LE core: one PT_NOTE, one PT_LOAD per (vaddr, paddr, page). With `pn_xnum`,
    e_phnum is PN_XNUM and section header 0 holds the real count (as QEMU's paging dumps
    with 65,535 or more segments have it)."""
    phnum = 1 + len(pages)
    phoff = 64
    shoff = phoff + 56 * phnum if pn_xnum else 0
    note_at = phoff + 56 * phnum + (64 if pn_xnum else 0)
    data_at = (note_at + len(notes) + PAGE - 1) // PAGE * PAGE
    eh = b"\x7fELF\x02\x01\x01" + bytes(9)
    eh += struct.pack(
        "<HHIQQQIHHHHHH",
        4,  # ET_CORE
        machine,
        1,
        0,
        phoff,
        shoff,
        0,
        64,
        56,
        0xFFFF if pn_xnum else phnum,
        64 if pn_xnum else 0,
        1 if pn_xnum else 0,
        0,
    )
    ph = struct.pack("<IIQQQQQQ", 4, 0, note_at, 0, 0, len(notes), len(notes), 0)
    for i, (vaddr, paddr, page) in enumerate(pages):
        off = data_at + i * PAGE
        ph += struct.pack("<IIQQQQQQ", 1, 7, off, vaddr, paddr, len(page), len(page), 0)
    out = bytearray(eh + ph)
    if pn_xnum:
        # Section header 0: sh_info is the program header count.
        out += struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, phnum, 0, 0)
    out += notes
    out += bytes(data_at - len(out))
    for _, _, page in pages:
        out += page
    return bytes(out)


# ---------------------------------------------------------------------------------------
# Page-table walks over real memory: which pages a read of a kernel address touches.


def x86_64_walk(read, root_pa: int, va: int) -> tuple[list[int], int | None]:
    """The table pages a 4-level x86_64 walk of `va` reads, and the physical address."""
    tables = []
    table = root_pa
    for level, shift in enumerate((39, 30, 21, 12)):
        tables.append(table)
        raw = read(table)
        if raw is None:
            return tables, None
        entry = struct.unpack_from("<Q", raw, ((va >> shift) & 511) * 8)[0]
        if not entry & 1:
            return tables, None
        addr = entry & 0x000F_FFFF_FFFF_F000
        if level in (1, 2) and entry & 0x80:  # 1 GiB / 2 MiB page
            return tables, (addr & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1))
        table = addr
    return tables, table | (va & 0xFFF)


def aarch64_walk(read, root_pa: int, va: int) -> tuple[list[int], int | None]:
    """The same for arm64 with 4 KiB pages and 48-bit virtual addresses (4 levels)."""
    tables = []
    table = root_pa
    for level, shift in enumerate((39, 30, 21, 12)):
        tables.append(table)
        raw = read(table)
        if raw is None:
            return tables, None
        entry = struct.unpack_from("<Q", raw, ((va >> shift) & 511) * 8)[0]
        addr = entry & 0x0000_FFFF_FFFF_F000
        if entry & 3 == 1 and level in (1, 2):  # block
            return tables, (addr & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1))
        if entry & 3 != 3:
            return tables, None
        table = addr
    return tables, table | (va & 0xFFF)


#: The symbols whose pages the session seeds hold: what open, info, dmesg and the kallsyms
#: decoder read first.
SESSION_SYMBOLS = (
    "init_uts_ns",
    "_stext",
    "swapper_pg_dir",
    "init_top_pgt",
    "prb",
    "printk_rb_static",
    "kallsyms_names",
    "kallsyms_num_syms",
    "kallsyms_token_table",
    "kallsyms_token_index",
    "kallsyms_offsets",
    "kallsyms_relative_base",
)


def pages_of_interest(info: dict[str, str], read, arch: str) -> dict[int, int]:
    """Physical page -> a kernel virtual address in it (0 for page tables), for the
    SESSION_SYMBOLS of VMCOREINFO and the page tables that map them."""
    symbols = {k[7:-1]: int(v, 16) for k, v in info.items() if k.startswith("SYMBOL(") and v}
    wanted = {name: va for name, va in symbols.items() if name in SESSION_SYMBOLS}
    if arch == "x86_64":
        phys_base = int(info.get("NUMBER(phys_base)", "0"), 0)

        def direct(va: int) -> int:
            if va >= X86_IMAGE_BASE:
                return va - X86_IMAGE_BASE + phys_base
            return va - X86_DIRECT_MAP

        root = direct(symbols.get("init_top_pgt", symbols["swapper_pg_dir"]))
        walk = x86_64_walk
    else:
        voffset = int(info["NUMBER(kimage_voffset)"], 0)

        def direct(va: int) -> int:
            return va - voffset

        root = direct(symbols["swapper_pg_dir"])
        walk = aarch64_walk
    out: dict[int, int] = {}
    for va in sorted(wanted.values()):
        tables, pa = walk(read, root, va)
        for t in tables:
            out.setdefault(t & ~0xFFF, 0)
        if pa is None:
            pa = direct(va)
        out.setdefault(pa & ~0xFFF, va & ~0xFFF)
    return {pa: va for pa, va in out.items() if read(pa) is not None}


# ---------------------------------------------------------------------------------------
# kdump files: read a real one, write a small one with a few of its pages.

KDUMP_STATUS_FLAGS = {1: "zlib", 2: "lzo", 4: "snappy", 0x20: "zstd"}


class Kdump:
    """A 64-bit little-endian kdump file (header version >= 6), from bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        (
            self.status,
            self.block_size,
            self.sub_hdr_size,
            self.bitmap_blocks,
            self.max_mapnr32,
        ) = struct.unpack_from("<5i", data, 424)
        self.version = struct.unpack_from("<i", data, 8)[0]
        bs = self.block_size
        sub = bs
        self.split = struct.unpack_from("<i", data, sub + 12)[0]
        self.start_pfn, self.end_pfn = struct.unpack_from("<QQ", data, sub + 80)
        self.max_mapnr = struct.unpack_from("<Q", data, sub + 96)[0]
        bitmap = (1 + self.sub_hdr_size) * bs
        half = self.bitmap_blocks * bs // 2
        self.bitmap1 = int.from_bytes(data[bitmap : bitmap + half], "little")
        self.bitmap2 = int.from_bytes(data[bitmap + half : bitmap + 2 * half], "little")
        self.descriptors = bitmap + 2 * half

    def has(self, pfn: int) -> bool:
        return bool(self.bitmap2 >> pfn & 1)

    def descriptor(self, pfn: int) -> tuple[int, int, int, int]:
        start = self.start_pfn if self.split else 0
        rank = bin(self.bitmap2 & ((1 << pfn) - 1) & ~((1 << start) - 1)).count("1")
        return struct.unpack_from("<qIIQ", self.data, self.descriptors + 24 * rank)

    def raw_page(self, pfn: int) -> tuple[bytes, int, int]:
        offset, size, flags, page_flags = self.descriptor(pfn)
        return self.data[offset : offset + size], flags, page_flags

    def page(self, pfn: int) -> bytes | None:
        """The page's bytes (zlib or raw pages only)."""
        if not self.has(pfn):
            return None
        data, flags, _ = self.raw_page(pfn)
        if flags & 1:
            return zlib.decompress(data)
        return data if flags == 0 else None


def mini_kdump(
    src: Kdump,
    pfns: list[int],
    excluded: list[int] = (),
    renumber: dict[int, int] | None = None,
    split: tuple[int, int] | None = None,
    max_mapnr: int | None = None,
) -> bytes:
    """A kdump file with `src`'s header and sub-header (VMCOREINFO, notes) and its pages at
    `pfns` (renumbered by `renumber`; `excluded` pfns exist but are not dumped)."""
    renumber = renumber or {}
    pages = sorted((renumber.get(p, p), p) for p in pfns if src.has(p))
    excluded = [renumber.get(p, p) for p in excluded]
    top = max([n for n, _ in pages] + list(excluded) + [split[1] - 1 if split else 0])
    max_mapnr = max_mapnr or (top // 4096 + 1) * 4096
    bs = src.block_size
    half_blocks = ((max_mapnr + 7) // 8 + bs - 1) // bs
    head = bytearray(src.data[: (1 + src.sub_hdr_size) * bs])
    struct.pack_into("<i", head, 436, 2 * half_blocks)
    struct.pack_into("<i", head, 440, min(max_mapnr, 0x7FFF_FFFF))
    sub = bs
    struct.pack_into("<QQ", head, sub + 64, 0, 0)  # no eraseinfo
    struct.pack_into("<Q", head, sub + 96, max_mapnr)
    if split:
        struct.pack_into("<i", head, sub + 12, 1)
        struct.pack_into("<QQ", head, sub + 16, *split)
        struct.pack_into("<QQ", head, sub + 80, *split)
    elif src.split:
        struct.pack_into("<i", head, sub + 12, 0)
        struct.pack_into("<QQ", head, sub + 16, 0, 0)
        struct.pack_into("<QQ", head, sub + 80, 0, 0)
    bitmap1 = bitmap2 = 0
    for n, _ in pages:
        bitmap1 |= 1 << n
        bitmap2 |= 1 << n
    for n in excluded:
        bitmap1 |= 1 << n
    half = half_blocks * bs
    out = bytearray(head)
    out += bitmap1.to_bytes(half, "little") + bitmap2.to_bytes(half, "little")
    data_at = len(out) + 24 * len(pages)
    descriptors = bytearray()
    blobs = bytearray()
    for _, p in pages:
        data, flags, page_flags = src.raw_page(p)
        descriptors += struct.pack("<qIIQ", data_at + len(blobs), len(data), flags, page_flags)
        blobs += data
    return bytes(out + descriptors + blobs)


def flatten(image: bytes, chunk: int = 4096) -> bytes:
    """makedumpfile's flattened stream of `image` (`makedumpfile -F`), records out of order
    as a producer writing through two caches leaves them."""
    header = struct.pack(">16sqq", b"makedumpfile", 1, 1).ljust(4096, b"\0")
    pieces = [(at, image[at : at + chunk]) for at in range(0, len(image), chunk)]
    pieces = pieces[1::2][::-1] + pieces[0::2]
    records = b"".join(struct.pack(">qq", at, len(d)) + d for at, d in pieces)
    return header + records + struct.pack(">qq", -1, -1)


def unflatten(stream: bytes) -> bytes:
    out = bytearray()
    pos = 4096
    while True:
        at, size = struct.unpack_from(">qq", stream, pos)
        pos += 16
        if at == -1:
            return bytes(out)
        if len(out) < at + size:
            out.extend(bytes(at + size - len(out)))
        out[at : at + size] = stream[pos : pos + size]
        pos += size


# ---------------------------------------------------------------------------------------
# kallsyms tables: the first entries of the real ones, laid out compactly.


def kallsyms_seed(
    info: dict[str, str], virt, count: int, flags: int, big_endian: bool, wide: bool
) -> bytes:
    """The kallsyms target's input: flags, six u32 offsets, then memory at MEMORY_BASE
    holding num_syms (= `count`), relative_base, the token index and table, the first
    `count` offsets and the names they need. The table bytes are real; `big_endian` and
    `wide` re-encode them for other word layouts."""

    def sym(name: str) -> int:
        return int(info[f"SYMBOL({name})"], 16)

    rel_base = struct.unpack("<Q", virt(sym("kallsyms_relative_base"), 8))[0]
    index = struct.unpack("<256H", virt(sym("kallsyms_token_index"), 512))
    table = virt(sym("kallsyms_token_table"), max(index) + 64)
    table = table[: table.index(b"\0", max(index)) + 1]
    offsets = struct.unpack(f"<{count}i", virt(sym("kallsyms_offsets"), 4 * count))
    names_raw = virt(sym("kallsyms_names"), 64 * count)
    at = 0
    for _ in range(count):
        n = names_raw[at]
        at += 1
        if n & 0x80:
            n = (n & 0x7F) | names_raw[at] << 7
            at += 1
        at += n
    names = names_raw[:at]

    e = ">" if big_endian else "<"
    long = "Q" if wide else "I"
    if not wide:
        rel_base &= 0xFFFF_FFFF
    parts = [
        ("num_syms", struct.pack(f"{e}I", count).ljust(8, b"\0")),
        ("relative_base", struct.pack(f"{e}{long}", rel_base).ljust(8, b"\0")),
        ("token_index", struct.pack(f"{e}256H", *index)),
        ("token_table", table + bytes(-len(table) % 8)),
        ("offsets", struct.pack(f"{e}{count}i", *offsets)),
        ("names", names),
    ]
    memory = bytearray()
    where = {}
    for name, blob in parts:
        where[name] = len(memory)
        memory += blob
    order = ["names", "num_syms", "token_table", "token_index", "offsets", "relative_base"]
    header = bytes([flags]) + b"".join(struct.pack("<I", where[n]) for n in order)
    return header + bytes(memory)


# ---------------------------------------------------------------------------------------
# Kernel log rings, with the real kernels' layout.


def console_lines(path: Path, n: int) -> list[str]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("[") and "]" in line:
            lines.append(line.split("]", 1)[1].strip())
        if len(lines) == n:
            break
    return lines or ["Linux version 6.1.0 (fuzz seed)"]


def layout_lines(text: bytes) -> bytes:
    """The OSRELEASE, OFFSET(), SIZE() and LENGTH() lines of a real VMCOREINFO."""
    keep = [
        line
        for line in text.splitlines()
        if line.startswith((b"OSRELEASE=", b"OFFSET(", b"SIZE(", b"LENGTH("))
    ]
    return b"\n".join(keep) + b"\n"


def lockless_seed(vmcoreinfo: bytes, lines: list[str], big_endian: bool = False) -> bytes:
    """The dmesg target's input for a ≥ 5.10 kernel: VMCOREINFO (the real layout lines and
    SYMBOL(prb)), then memory: the prb pointer, struct printk_ringbuffer, 16 descriptors, 16
    infos and a 1 KiB data ring holding `lines` (the last ones wrap to the ring's start)."""
    info = vmcoreinfo_of(vmcoreinfo)
    e = ">" if big_endian else "<"

    def off(k: str) -> int:
        return int(info[f"OFFSET({k})"])

    def size(k: str) -> int:
        return int(info[f"SIZE({k})"])

    counter = int(info.get("OFFSET(atomic_long_t.counter)", "0"))
    count_bits, size_bits = 4, 10
    count, data_size = 1 << count_bits, 1 << size_bits
    prb_at, ring_at = 64, 256
    descs_at = ring_at
    infos_at = descs_at + count * size("prb_desc")
    data_at = infos_at + count * size("printk_info")
    memory = bytearray(data_at + data_size)

    def long_at(at: int, value: int) -> None:
        struct.pack_into(f"{e}Q", memory, at, value)

    long_at(0, MEMORY_BASE + prb_at)
    desc_ring = prb_at + off("printk_ringbuffer.desc_ring")
    text_ring = prb_at + off("printk_ringbuffer.text_data_ring")
    struct.pack_into(f"{e}I", memory, desc_ring + off("prb_desc_ring.count_bits"), count_bits)
    long_at(desc_ring + off("prb_desc_ring.descs"), MEMORY_BASE + descs_at)
    long_at(desc_ring + off("prb_desc_ring.infos"), MEMORY_BASE + infos_at)
    struct.pack_into(f"{e}I", memory, text_ring + off("prb_data_ring.size_bits"), size_bits)
    long_at(text_ring + off("prb_data_ring.data"), MEMORY_BASE + data_at)

    first_id = 3 * count + 5  # ids have wrapped the descriptor array a few times
    lpos = 2 * data_size + data_size - 256  # the ring's last quarter: the block wraps
    ids = []
    for i, text in enumerate(lines[: count - 2]):
        raw = text.encode()[:120]
        block = 8 + len(raw)
        block += -block % 8
        begin = lpos
        if (begin % data_size) + block > data_size:  # wraps: stored whole at the start
            next_pos = (begin // data_size + 1) * data_size + block
            at = 0
        else:
            next_pos = begin + block
            at = begin % data_size
        struct.pack_into(f"{e}Q", memory, data_at + at, first_id + i)
        memory[data_at + at + 8 : data_at + at + 8 + len(raw)] = raw
        lpos = next_pos
        ident = first_id + i
        index = ident & (count - 1)
        desc = descs_at + index * size("prb_desc")
        state = 2 if i % 3 else 1  # finalized, committed
        long_at(desc + off("prb_desc.state_var") + counter, state << 62 | ident)
        lpos_at = desc + off("prb_desc.text_blk_lpos")
        long_at(lpos_at + off("prb_data_blk_lpos.begin"), begin)
        long_at(lpos_at + off("prb_data_blk_lpos.next"), next_pos)
        inf = infos_at + index * size("printk_info")
        struct.pack_into(f"{e}Q", memory, inf + off("printk_info.seq"), 1000 + i)
        struct.pack_into(f"{e}Q", memory, inf + off("printk_info.ts_nsec"), 1_000_000 * i + 7)
        struct.pack_into(f"{e}H", memory, inf + off("printk_info.text_len"), len(raw))
        memory[inf + off("printk_info.text_len") + 3] = (i % 8) << 5
        ids.append(ident)
    long_at(desc_ring + off("prb_desc_ring.tail_id") + counter, ids[0])
    long_at(desc_ring + off("prb_desc_ring.head_id") + counter, ids[-1])
    long_at(text_ring + off("prb_data_ring.head_lpos"), lpos)
    long_at(text_ring + off("prb_data_ring.tail_lpos"), 2 * data_size + data_size - 256)

    text = layout_lines(vmcoreinfo) + f"SYMBOL(prb)={MEMORY_BASE:x}\n".encode()
    flags = 1 if big_endian else 0
    return text + b"\0\0" + bytes([flags]) + bytes(memory)


def log_buf_seed(lines: list[str], big_endian: bool, wide: bool) -> bytes:
    """The dmesg target's input for a < 5.10 kernel: the variable-length `log_buf` with
    16-byte `struct printk_log` headers, wrapped once."""
    e = ">" if big_endian else "<"
    long = "Q" if wide else "I"
    records = []
    for i, text in enumerate(lines[:8]):
        raw = text.encode()[:100]
        length = (16 + len(raw) + 7) // 8 * 8
        rec = struct.pack(f"{e}QHHBB", 1_000_000_000 * i + 1234, length, len(raw), 0, 0)
        rec += bytes([0, (i % 8) << 5]) + raw
        records.append(rec.ljust(length, b"\0"))
    ring_len = 1024
    ring = bytearray(ring_len)
    # The last two records wrapped to the start; the others from offset 256.
    tail = records[-2:]
    at = 0
    for rec in tail:
        ring[at : at + len(rec)] = rec
        at += len(rec)
    next_idx = at
    first_idx = at = 256
    for rec in records[:-2]:
        ring[at : at + len(rec)] = rec
        at += len(rec)
    # A zero-length header here sends the reader back to 0.
    buf_at, vars_at = 64, 32
    memory = bytearray(buf_at + ring_len)
    struct.pack_into(f"{e}{long}", memory, 0, MEMORY_BASE + buf_at)
    struct.pack_into(f"{e}III", memory, vars_at, ring_len, first_idx, next_idx)
    memory[buf_at:] = ring
    text = (
        f"OSRELEASE=4.19.0-fuzz\nSYMBOL(log_buf)={MEMORY_BASE:x}\n"
        f"SYMBOL(log_buf_len)={MEMORY_BASE + vars_at:x}\n"
        f"SYMBOL(log_first_idx)={MEMORY_BASE + vars_at + 4:x}\n"
        f"SYMBOL(log_next_idx)={MEMORY_BASE + vars_at + 8:x}\n"
        "SIZE(printk_log)=16\nOFFSET(printk_log.ts_nsec)=0\nOFFSET(printk_log.len)=8\n"
        "OFFSET(printk_log.text_len)=10\n"
    ).encode()
    flags = (1 if big_endian else 0) | (0 if wide else 2)
    return text + b"\0\0" + bytes([flags]) + bytes(memory)


# ---------------------------------------------------------------------------------------
# Exec files: System.map and kallsyms slices, a small vmlinux with a .symtab.

WANTED = (
    b"_text",
    b"_stext",
    b"_etext",
    b"_sinittext",
    b"jiffies",
    b"init_uts_ns",
    b"linux_banner",
    b"swapper_pg_dir",
    b"_end",
)


def map_slice(path: Path, first: int = 24) -> bytes:
    """The first lines of a System.map and the lines of the names open looks up."""
    lines = path.read_bytes().splitlines(keepends=True)
    keep = lines[:first] + [
        line for line in lines[first:] if line.split()[-1:] and line.split()[-1] in WANTED
    ]
    return b"".join(keep)


def kallsyms_slice(path: Path) -> bytes:
    data = path.read_bytes()
    first = data[: data.rindex(b"\n", 0, 1024) + 1]
    modules = [line + b"\n" for line in data.splitlines()[-4:] if b"\t[" in line]
    return first + b"".join(modules)


def mini_vmlinux(
    map_text: bytes, build_id: bytes, banner: bytes, elf64: bool = True, big: bool = False
) -> bytes:
    """A kernel image with the symbols of a System.map slice: .text, .rodata (holding the
    banner at linux_banner), .data, .bss, the build-id note, .symtab, .strtab, .shstrtab."""
    e = ">" if big else "<"
    syms = []
    for line in map_text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            syms.append((int(parts[0], 16), parts[1], parts[2]))
    mask = (1 << 64) - 1 if elf64 else 0xFFFF_FFFF
    syms = [(v & mask, t, n) for v, t, n in syms]
    text_at = next((v for v, t, n in syms if n == b"_stext"), syms[0][0])
    banner_at = next((v for v, t, n in syms if n == b"linux_banner"), text_at + 0x1000)
    # name, type, flags, addr, data
    sections = [
        (b".text", 1, 6, text_at, b"\xcc" * 64),
        (b".rodata", 1, 2, banner_at, banner),
        (b".data", 1, 3, (banner_at + 0x10000) & mask, bytes(64)),
        (b".bss", 8, 3, (banner_at + 0x20000) & mask, b""),
    ]
    desc = build_id
    note = struct.pack(f"{e}III", 4, len(desc), 3) + b"GNU\0" + desc
    sections.append((b".notes", 7, 2, 0, note))

    def section_of(letter: bytes) -> int:
        upper = letter.upper()
        return {b"T": 1, b"W": 1, b"R": 2, b"D": 3, b"B": 4, b"A": 0xFFF1}.get(upper, 3)

    strtab = bytearray(b"\0")
    entries = []
    for value, letter, name in syms:
        name_at = len(strtab)
        strtab += name + b"\0"
        bind = 0 if letter.islower() else 1
        if letter in (b"W", b"V"):
            bind = 2
        kind = 1 if letter.upper() in (b"D", b"B", b"R", b"V") else 2
        info = bind << 4 | kind
        shndx = section_of(letter)
        if elf64:
            entries.append(struct.pack(f"{e}IBBHQQ", name_at, info, 0, shndx, value, 0))
        else:
            entries.append(struct.pack(f"{e}IIIBBH", name_at, value, 0, info, 0, shndx))
    symtab = (bytes(24 if elf64 else 16)) + b"".join(entries)
    names = [s[0] for s in sections] + [b".symtab", b".strtab", b".shstrtab"]
    shstrtab = bytearray(b"\0")
    name_at = {}
    for n in names:
        name_at[n] = len(shstrtab)
        shstrtab += n + b"\0"
    ehsize = 64 if elf64 else 52
    body = bytearray()
    placed = []
    for n, t, fl, addr, data in sections:
        placed.append((n, t, fl, addr, ehsize + len(body), len(data) or 0x1000, 0, 0))
        body += data + bytes(-len(data) % 8)
    sym_at = ehsize + len(body)
    body += symtab
    str_at = ehsize + len(body)
    body += strtab + bytes(-len(strtab) % 8)
    shstr_at = ehsize + len(body)
    body += shstrtab + bytes(-len(shstrtab) % 8)
    strtab_index = len(sections) + 2
    placed.append((b".symtab", 2, 0, 0, sym_at, len(symtab), strtab_index, len(sections) + 1))
    placed.append((b".strtab", 3, 0, 0, str_at, len(strtab), 0, 0))
    placed.append((b".shstrtab", 3, 0, 0, shstr_at, len(shstrtab), 0, 0))
    shoff = ehsize + len(body)
    shdrs = bytearray(bytes(64 if elf64 else 40))
    for n, t, fl, addr, off, size, link, info in placed:
        if elf64:
            entsize = 24 if t == 2 else 0
            shdrs += struct.pack(
                f"{e}IIQQQQIIQQ", name_at[n], t, fl, addr, off, size, link, info, 8, entsize
            )
        else:
            entsize = 16 if t == 2 else 0
            shdrs += struct.pack(
                f"{e}IIIIIIIIII", name_at[n], t, fl, addr, off, size, link, info, 4, entsize
            )
    ident = b"\x7fELF" + bytes([2 if elf64 else 1, 2 if big else 1, 1]) + bytes(9)
    machine = (62 if elf64 else 3) if not big else (21 if elf64 else 20)
    shnum = len(placed) + 1
    if elf64:
        eh = ident + struct.pack(
            f"{e}HHIQQQIHHHHHH",
            2,
            machine,
            1,
            text_at,
            0,
            shoff,
            0,
            64,
            0,
            0,
            64,
            shnum,
            shnum - 1,
        )
    else:
        eh = ident + struct.pack(
            f"{e}HHIIIIIHHHHHH",
            2,
            machine,
            1,
            text_at,
            0,
            shoff,
            0,
            52,
            0,
            0,
            40,
            shnum,
            shnum - 1,
        )
    return bytes(eh + body + shdrs)


# ---------------------------------------------------------------------------------------


#: Words of kind-specific data per BTF kind, and which of them are name offsets
#: (records per vlen entry: (words per entry, index of the name word or None)).
BTF_PER_ENTRY = {4: (3, 0), 5: (3, 0), 6: (2, 0), 13: (2, 0), 15: (3, None), 19: (3, 0)}
BTF_FIXED = {1: 1, 3: 3, 14: 1, 17: 1}


def elf_section(path: Path, wanted: bytes) -> bytes:
    """The bytes of the section called `wanted` in an ELF64 little-endian file."""
    data = path.read_bytes()
    shoff = struct.unpack_from("<Q", data, 40)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 58)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    for name, _, _, _, offset, size in headers:
        start = names_at + name
        if data[start : data.index(b"\0", start)] == wanted:
            return data[offset : offset + size]
    sys.exit(f"{path}: no {wanted.decode()} section")


def btf_seed(blob: bytes, keep: int, big_endian: bool = False) -> bytes:
    """The first `keep` types of a real BTF blob with only the strings they name, in either
    byte order (every field after the magic and version is a u32)."""
    _, _, _, hdr_len, type_off, type_len, str_off, _ = struct.unpack_from("<HBBIIIII", blob, 0)
    types = blob[hdr_len + type_off : hdr_len + type_off + type_len]
    strings = blob[hdr_len + str_off :]
    table = bytearray(b"\0")
    renamed: dict[int, int] = {0: 0}

    def name(off: int) -> int:
        if off not in renamed:
            renamed[off] = len(table)
            table.extend(strings[off : strings.index(b"\0", off) + 1])
        return renamed[off]

    words: list[int] = []
    at = 0
    for _ in range(keep):
        name_off, info, size = struct.unpack_from("<III", types, at)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        words += [name(name_off), info, size]
        at += 12
        per, name_at = BTF_PER_ENTRY.get(kind, (0, None))
        count = vlen * per if per else BTF_FIXED.get(kind, 0)
        extra = list(struct.unpack_from(f"<{count}I", types, at))
        if name_at is not None:
            for i in range(name_at, count, per):
                extra[i] = name(extra[i])
        words += extra
        at += 4 * count
    e = ">" if big_endian else "<"
    body = struct.pack(f"{e}{len(words)}I", *words)
    header = struct.pack(f"{e}HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(table))
    return header + body + bytes(table)


def need(path: Path) -> Path:
    if not path.exists():
        sys.exit(
            f"{path} is missing: run python3 ../shared/corpus/unpack.py and "
            "python3 ../shared/fleet/unpack.py first"
        )
    return path


#: Where the unwind target puts its fake kernel memory (KERNEL_BASE in fuzz_targets/unwind.rs).
UNWIND_BASE = 0xFFFF_FFFF_8100_0000


def unwind_seed(flags: int, registers: list[int], symbols: list[int], memory: bytes) -> bytes:
    """The unwind target's input: flags, 34 registers, 5 symbol offsets, memory."""
    registers = registers + [0] * (34 - len(registers))
    return bytes([flags]) + struct.pack("<34Q", *registers) + struct.pack("<5I", *symbols) + memory


def unwind_seeds() -> None:
    """Two small machines made here (no dump's stack fits a seed with its ORC tables): an
    x86_64 6.1 stack of two CALL frames over the syscall pt_regs, and an aarch64 stack of a
    leaf (its return address in x30 only), two frame records and the final zero record."""
    ip_table, orc, text, stack = 0x0, 0x100, 0x1000, 0x2000
    memory = bytearray(0x6000)
    # (sp_offset, bp_offset, sp_reg | bp_reg << 4, type/end byte) in the 4.14-6.2 layout.
    entries = [(8, 0, 0x05, 0), (16, 0, 0x05, 0), (0, 0, 0x05, 1), (0, 0, 0, 4)]
    for i, (sp_offset, bp_offset, regs_byte, type_byte) in enumerate(entries):
        at = ip_table + 4 * i
        struct.pack_into("<i", memory, at, text + 0x100 * i - at)
        struct.pack_into("<hhBB", memory, orc + 6 * i, sp_offset, bp_offset, regs_byte, type_byte)
    sp = stack + 0x3E00
    struct.pack_into("<Q", memory, sp, UNWIND_BASE + text + 0x120)
    struct.pack_into("<Q", memory, sp + 16, UNWIND_BASE + text + 0x210)
    pt_regs = sp + 24
    for index, value in ((16, 0x47B7A0), (17, 0x33), (19, 0x7FFC_0000)):  # ip, cs, sp
        struct.pack_into("<Q", memory, pt_regs + 8 * index, value)
    registers = [0] * 27
    registers[16], registers[17], registers[19] = UNWIND_BASE + text + 0x33, 0x10, UNWIND_BASE + sp
    symbols = [ip_table, ip_table + 16, orc, text, text + 0x400]
    put("unwind", "x86_64-orc-v1-syscall", unwind_seed(2, registers, symbols, bytes(memory)))

    memory = bytearray(0x6000)
    fp1, fp2, end = stack + 0x3D00, stack + 0x3E00, stack + 0x3F00
    signed = (UNWIND_BASE + text + 0x208) & ~0xFF80_0000_0000_0000 | 0x0080_0000_0000_0000
    struct.pack_into("<QQ", memory, fp1, UNWIND_BASE + fp2, signed)
    struct.pack_into("<QQ", memory, fp2, UNWIND_BASE + end, UNWIND_BASE + text + 0x30C)
    registers = [0] * 34
    registers[29], registers[30] = UNWIND_BASE + fp1, UNWIND_BASE + text + 0x104
    registers[32], registers[33] = UNWIND_BASE + text + 0x10, 0x3C5  # pc, pstate EL1h
    put(
        "unwind",
        "aarch64-records-leaf",
        unwind_seed(3, registers, [0, 0, 0, text, text + 0x400], bytes(memory)),
    )


def main() -> None:
    if SEEDS.exists():
        shutil.rmtree(SEEDS)

    x86_info_text = need(CORPUS / "boot-nokaslr.qemu-elf.vmcore.vmcoreinfo.txt").read_bytes()
    x86_info = vmcoreinfo_of(x86_info_text)
    x86_elf = ElfCore(need(CORPUS / "boot-nokaslr.qemu-elf.vmcore"))
    x86_pages = pages_of_interest(x86_info, x86_elf.phys, "x86_64")
    arm_info_text = need(FLEET / "arm64-a.vmcoreinfo.txt").read_bytes()
    arm_info = vmcoreinfo_of(arm_info_text)
    arm_elf = ElfCore(need(FLEET / "arm64-a.qemu-elf.vmcore"))
    arm_pages = pages_of_interest(arm_info, arm_elf.phys, "aarch64")

    def x86_virt(va: int, size: int) -> bytes:
        return x86_elf.phys(va - X86_IMAGE_BASE, size)

    def arm_virt(va: int, size: int) -> bytes:
        return arm_elf.phys(va - int(arm_info["NUMBER(kimage_voffset)"], 0), size)

    # -- elf_core: headers and notes of real ELF dumps (their data cut off), and small
    # ELF dumps of real pages (QEMU's layout: p_vaddr 0, or with the paging option the
    # kernel's own addresses and PN_XNUM).
    for name, path in [
        ("qemu-elf-x86_64.head", CORPUS / "boot-nokaslr.qemu-elf.vmcore"),
        ("qemu-elf-paging-x86_64.head", CORPUS / "boot-nokaslr.qemu-elf-paging.vmcore"),
        ("qemu-elf-arm64.head", FLEET / "arm64-a.qemu-elf.vmcore"),
        ("mdf-elf-x86_64.head", FLEET / "big-a.mdf-d31.elf.vmcore"),
    ]:
        put("elf_core", name, head(need(path), 8192))
    x86_few = sorted(x86_pages)[:6]
    x86_mini = mini_elf(
        x86_elf.notes, [(0, pa, x86_elf.phys(pa)) for pa in x86_few], x86_elf.machine
    )
    x86_paging = mini_elf(
        x86_elf.notes,
        [(x86_pages[pa] or X86_DIRECT_MAP + pa, pa, x86_elf.phys(pa)) for pa in x86_few],
        x86_elf.machine,
        pn_xnum=True,
    )
    arm_few = sorted(arm_pages)[:6]
    arm_mini = mini_elf(
        arm_elf.notes, [(pa, pa, arm_elf.phys(pa)) for pa in arm_few], arm_elf.machine
    )
    put("elf_core", "mini-x86_64.elf", x86_mini)
    put("elf_core", "mini-paging-x86_64.elf", x86_paging)
    put("elf_core", "mini-arm64.elf", arm_mini)

    # -- kdump: small files keeping real headers, VMCOREINFO, notes and compressed pages,
    # one per compression and kernel; a split part; the header of a real file cut short.
    kdumps = {}
    for name, path in [
        ("zlib", CORPUS / "boot-nokaslr.mdf-d31-zlib.kdump"),
        ("lzo", CORPUS / "boot-nokaslr.mdf-d31-lzo.kdump"),
        ("zstd", CORPUS / "boot-nokaslr.mdf-d31-zstd.kdump"),
        ("snappy-kaslr", CORPUS / "boot-kaslr.mdf-d31-snappy.kdump"),
        ("bullseye-zlib", FLEET / "bullseye-a.mdf-d31-zlib.kdump"),
        ("trixie-zlib", FLEET / "trixie-a.mdf-d31-zlib.kdump"),
    ]:
        kdumps[name] = Kdump(need(path).read_bytes())
    zlib_dump = kdumps["zlib"]
    few = [pa // PAGE for pa in x86_few if zlib_dump.has(pa // PAGE)][:4]
    for name, dump in kdumps.items():
        dumped = [p for p in few if dump.has(p)] or [
            p for p in range(0x1000, 0x4000) if dump.has(p)
        ][:4]
        excluded = next(
            p for p in range(0x1000, 0x4000) if dump.bitmap1 >> p & 1 and not dump.has(p)
        )
        # Renumbered to low pfns: a small bitmap whatever the machine's memory size.
        renumber = {p: 8 + i for i, p in enumerate(dumped)}
        renumber[excluded] = 20
        put(
            "kdump",
            f"mini-{name}.kdump",
            mini_kdump(dump, dumped, [excluded], renumber, max_mapnr=64),
        )
    split_src = Kdump(need(FLEET / "big-a.mdf-d31-zlib-split2.kdump").read_bytes())
    part_pfns = [p for p in range(split_src.start_pfn, split_src.end_pfn) if split_src.has(p)]
    part_pfns = part_pfns[:3]
    put(
        "kdump",
        "mini-split2.kdump",
        mini_kdump(
            split_src,
            part_pfns,
            renumber={p: 40 + i for i, p in enumerate(part_pfns)},
            split=(32, 48),
            max_mapnr=64,
        ),
    )
    # (QEMU's arm64 kdump has 64 KiB blocks: no small file keeps them; the flattened seeds
    # have its head.)
    put("kdump", "mdf-zlib.head", zlib_dump.data[:16384])

    # -- flattened: the real streams' first records (cut), and small dumps flattened.
    put(
        "flattened",
        "qemu-kdump-x86_64.head",
        head(need(CORPUS / "boot-nokaslr.qemu-kdump-zlib.vmcore"), 32768),
    )
    put(
        "flattened",
        "qemu-kdump-arm64.head",
        head(need(FLEET / "arm64-a.qemu-kdump-zlib.vmcore"), 16384),
    )
    put("flattened", "mini-zstd.flat", flatten((SEEDS / "kdump/mini-zstd.kdump").read_bytes()))
    put(
        "flattened",
        "mini-bullseye.flat",
        flatten((SEEDS / "kdump/mini-bullseye-zlib.kdump").read_bytes(), chunk=3000),
    )
    put("flattened", "mini-x86_64-elf.flat", flatten(x86_mini))

    # -- session: dumps a handle can read through: the pages every VMCOREINFO symbol lies
    # in, with the page tables that map them, at their real addresses.
    x86_pfns = sorted({pa // PAGE for pa in x86_pages})
    put("session", "nokaslr-zlib.kdump", mini_kdump(zlib_dump, x86_pfns))
    put(
        "session",
        "nokaslr.elf",
        mini_elf(
            x86_elf.notes, [(0, pa, x86_elf.phys(pa)) for pa in sorted(x86_pages)], x86_elf.machine
        ),
    )
    put(
        "session",
        "arm64.elf",
        mini_elf(
            arm_elf.notes, [(pa, pa, arm_elf.phys(pa)) for pa in sorted(arm_pages)], arm_elf.machine
        ),
    )
    put(
        "session",
        "paging-x86_64.elf",
        mini_elf(
            x86_elf.notes,
            [
                (x86_pages[pa] or X86_DIRECT_MAP + pa, pa, x86_elf.phys(pa))
                for pa in sorted(x86_pages)
            ],
            x86_elf.machine,
            pn_xnum=True,
        ),
    )

    # -- vmcoreinfo: the real texts; one with two sources as a kdump with a note has them.
    for path in sorted([*CORPUS.glob("*.kdump.vmcoreinfo.txt"), *FLEET.glob("*.vmcoreinfo.txt")]):
        put("vmcoreinfo", path.name.replace(".vmcoreinfo.txt", ".txt"), path.read_bytes())
    put(
        "vmcoreinfo",
        "two-sources.txt",
        x86_info_text + b"\0" + arm_info_text[:1024] + b"\0" + x86_info_text[:512],
    )

    # -- exec: System.map and kallsyms slices; small vmlinux images (ELF64 LE, ELF32 BE).
    x86_map = map_slice(need(CORPUS / "System.map-6.1.0-56-amd64"))
    put("exec", "System.map-6.1-amd64.slice", x86_map)
    put("exec", "System.map-6.1-arm64.slice", map_slice(need(FLEET / "System.map-6.1.0-57-arm64")))
    put(
        "exec",
        "System.map-5.10-amd64.slice",
        map_slice(need(FLEET / "System.map-5.10.0-32-amd64"), first=8),
    )
    put("exec", "kallsyms-host.slice", kallsyms_slice(need(CORPUS / "kallsyms-host.txt")))
    banner_va = next(
        int(line.split()[0], 16) for line in x86_map.splitlines() if line.endswith(b" linux_banner")
    )
    banner = x86_virt(banner_va, 160).split(b"\0")[0] + b"\0"
    build_id = bytes.fromhex(x86_info["BUILD-ID"])
    put("exec", "vmlinux-6.1-amd64.mini", mini_vmlinux(x86_map, build_id, banner))
    put("exec", "vmlinux-elf32-be.mini", mini_vmlinux(x86_map, build_id, banner, False, True))

    # -- kallsyms: the real tables' first entries, in each word layout.
    put("kallsyms", "x86_64-400syms", kallsyms_seed(x86_info, x86_virt, 400, 0, False, True))
    put("kallsyms", "x86_64-limit-16", kallsyms_seed(x86_info, x86_virt, 96, 2 << 2, False, True))
    put("kallsyms", "arm64-48syms", kallsyms_seed(arm_info, arm_virt, 48, 0, False, True))
    put("kallsyms", "be32-40syms", kallsyms_seed(x86_info, x86_virt, 40, 3, True, False))

    # -- unwind: two small machines.
    unwind_seeds()

    # -- dmesg: lockless rings in each real kernel's layout; log_buf in two word layouts.
    for name, info_path, log in [
        (
            "x86_64-6.1",
            CORPUS / "boot-nokaslr.mdf-d31-zlib.kdump.vmcoreinfo.txt",
            CORPUS / "boot-nokaslr.console.log",
        ),
        ("x86_64-5.10", FLEET / "bullseye-a.vmcoreinfo.txt", FLEET / "bullseye-a.console.log"),
        ("x86_64-6.12", FLEET / "trixie-a.vmcoreinfo.txt", FLEET / "trixie-a.console.log"),
        ("arm64-6.1", FLEET / "arm64-a.vmcoreinfo.txt", FLEET / "arm64-a.console.log"),
    ]:
        put(
            "dmesg",
            f"prb-{name}",
            lockless_seed(need(info_path).read_bytes(), console_lines(need(log), 14)),
        )
    lines = console_lines(CORPUS / "boot-nokaslr.console.log", 8)
    put("dmesg", "prb-x86_64-6.1-be", lockless_seed(x86_info_text, lines, big_endian=True))
    put("dmesg", "log_buf-le64", log_buf_seed(lines, big_endian=False, wide=True))
    put("dmesg", "log_buf-be32", log_buf_seed(lines, big_endian=True, wide=False))

    # -- btf: the 6.1 vmlinux's first types (list_head is 93, task_struct 112, cred 549,
    # signal_struct 560) with the strings they name; a big-endian copy; a raw cut.
    btf = elf_section(need(CORPUS / "vmlinux-6.1.0-56-amd64.stripped"), b".BTF")
    put("btf", "vmlinux-6.1-600types", btf_seed(btf, 600))
    put("btf", "vmlinux-6.1-120types-be", btf_seed(btf, 120, big_endian=True))
    put("btf", "vmlinux-6.1-head-4k", btf[:4096])

    total = sum(written.values())
    for name, size in written.items():
        print(f"{size:8d}  {name}")
    print(f"{total:8d}  in {len(written)} seeds")
    if total >= 1 << 20:
        sys.exit("seeds total 1 MiB or more: keep them small")


if __name__ == "__main__":
    main()
