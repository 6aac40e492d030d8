"""Hostile files for tests/test_hostile.py: each small and generated, each shaped like one
failure of the issue (a header that claims more than the file holds, a decoder input that
multiplies, arithmetic near 2^64), around the synthetic kernel of tests/synthetic.py.

Kernel data the decoders read (kallsyms tables, the printk ring) lives in one PT_LOAD of an
ELF core at `KDATA` (above the synthetic image, below x86_64's module area); the builders
return the file and whatever the test must know about it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import elfwriter
import kdumpwriter as kw
from elfwriter import Load
from kdumpwriter import KdumpSpec
from synthetic import TEXT_ADDR, synthetic_vmcoreinfo

PAGE = 4096
TIB = 1 << 40
#: Kernel virtual address of the hostile kernel data, and its physical address.
KDATA = 0xFFFF_FFFF_8200_0000
KDATA_PHYS = 0x200_0000
#: x86_64's __START_KERNEL_map: the image maps va = START_KERNEL_MAP + pa (phys_base 0).
START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
U64_MAX = (1 << 64) - 1


def put(buf: bytearray, at: int, fmt: str, *values: int) -> None:
    struct.pack_into("<" + fmt, buf, at, *values)


def hexaddr(value: int) -> str:
    """A SYMBOL() value: hex without 0x."""
    return f"{value:x}"


# -- 1. flattened streams whose inner file "looks big enough" -------------------------------


def with_record(stream: bytes, offset: int, data: bytes) -> bytes:
    """A flattened stream with one more record, `data` at inner `offset`, before its end
    marker: a few bytes far out make the re-assembled file that large."""
    end = struct.pack(">qq", kw.MDF_END_FLAG, kw.MDF_END_FLAG)
    assert stream.endswith(end)
    return stream[: -len(end)] + struct.pack(">qq", offset, len(data)) + data + end


def flattened_kdump_terabyte_bitmap() -> bytes:
    """A kdump (v6) whose header claims 2^43 page frames, so a 1 TiB bitmap per half
    (bitmap_blocks 2^29 of 4 KiB), flattened; a 16-byte record just past where the bitmaps
    would end extends the inner file over them. The stream itself is ~25 KiB."""
    spec = KdumpSpec(
        max_mapnr=64,
        pages={0: b"page zero".ljust(PAGE, b"\0")},
        vmcoreinfo=synthetic_vmcoreinfo(),
        compress=None,
    )
    image, layout = kw.build_with_layout(spec)
    out = bytearray(image)
    e = layout.abi.endian
    mapnr = 8 * TIB  # bits in one 1 TiB half
    blocks = 2 * TIB // PAGE
    at, _ = layout.header_fields["bitmap_blocks"]
    struct.pack_into(e + "I", out, at, blocks)
    at, _ = layout.header_fields["max_mapnr"]
    struct.pack_into(e + "I", out, at, kw.UINT_MAX)
    sub_at, _ = layout.sub_header
    at, _ = layout.sub_header_fields["max_mapnr_64"]
    struct.pack_into(e + "Q", out, sub_at + at, mapnr)
    bitmaps_end = layout.bitmap1 + blocks * PAGE
    return with_record(kw.flatten(bytes(out)), bitmaps_end, b"\xff" * 16)


def flattened_elf_xnum() -> bytes:
    """An ELF core with e_phnum = PN_XNUM and section header 0's sh_info = 2^24 (896 MiB of
    program headers), flattened; a 16-byte record past the table's end extends the inner
    file over it."""
    image, layout = elfwriter.elf_core_with_layout(
        synthetic_vmcoreinfo(), [Load(KDATA, KDATA_PHYS, b"\xaa" * PAGE)]
    )
    shoff = (len(image) + 7) // 8 * 8
    shdr0 = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 1 << 24, 0, 0)
    image = image.ljust(shoff, b"\0") + shdr0
    image = elfwriter.patch_ehdr(image, e_phnum=0xFFFF, e_shoff=shoff, e_shentsize=64)
    table_end = layout.phoff + (1 << 24) * 56
    return with_record(kw.flatten(image), table_end, b"\0" * 16)


# -- 2. kallsyms tables that multiply --------------------------------------------------------

#: Where each table lies in the kallsyms PT_LOAD (offsets from KDATA).
KALLSYMS_AT = {
    "kallsyms_num_syms": 0x0,
    "kallsyms_relative_base": 0x8,
    "kallsyms_offsets": 0x100,
    "kallsyms_token_index": 0x1000,
    "kallsyms_token_table": 0x2000,
    "kallsyms_names": 0x14000,
}
#: Token 0's length: it starts at 0 and every other token_index entry is 0xffff, so a
#: decoder that reads the table up to the largest index plus a name's length sees it whole.
LONG_TOKEN = 65_791
#: Tokens in the first name: the two-byte length form (0x80 | lo, hi) at its largest.
NAME_TOKENS = 32_767
KALLSYMS_NUM_SYMS = 16


def kallsyms_bomb() -> tuple[bytes, Load]:
    """VMCOREINFO lines naming kallsyms tables, and the PT_LOAD holding them: token 0 is
    LONG_TOKEN bytes long and the first name is NAME_TOKENS copies of it (2 GiB decoded)."""
    mem = bytearray(0x30000)
    at = KALLSYMS_AT
    put(mem, at["kallsyms_num_syms"], "I", KALLSYMS_NUM_SYMS)
    put(mem, at["kallsyms_relative_base"], "Q", TEXT_ADDR)
    for i in range(KALLSYMS_NUM_SYMS):
        put(mem, at["kallsyms_offsets"] + 4 * i, "I", 0x10 * i)
    put(mem, at["kallsyms_token_index"], "256H", 0, *([0xFFFF] * 255))
    table = at["kallsyms_token_table"]
    mem[table : table + LONG_TOKEN] = b"T" * LONG_TOKEN  # NUL after it (the buffer is zero)
    names = at["kallsyms_names"]
    lo, hi = NAME_TOKENS & 0x7F, NAME_TOKENS >> 7
    mem[names : names + 2] = bytes([0x80 | lo, hi])  # then NAME_TOKENS zero bytes: token 0
    assert names + 2 + NAME_TOKENS <= len(mem)
    lines = "".join(f"SYMBOL({name})={hexaddr(KDATA + off)}\n" for name, off in at.items())
    return lines.encode(), Load(KDATA, KDATA_PHYS, bytes(mem))


def kallsyms_bomb_core() -> bytes:
    """An ELF core of the synthetic kernel whose VMCOREINFO names the kallsyms bomb."""
    lines, load = kallsyms_bomb()
    return elfwriter.elf_core(synthetic_vmcoreinfo() + lines, [load])


def thin_kallsyms() -> bytes:
    """A text-only kallsyms of the unrandomized synthetic kernel whose only symbol in common
    with VMCOREINFO is `_stext` (a module line makes it kallsyms, not System.map): open must
    settle identity with a sample of the dump's own kallsyms (SPEC §6)."""
    return elfwriter.system_map(
        [
            (TEXT_ADDR, "T", "_stext"),
            (TEXT_ADDR + 0x100, "t", "thin_fn"),
            (0xFFFF_FFFF_C000_0000, "t", "mod_fn", "thin"),
        ]
    )


# -- 3 and 10. the printk ring ----------------------------------------------------------------

#: The lockless ring's layout, as boot-nokaslr.qemu-elf.vmcore.vmcoreinfo.txt has it
#: (6.1 x86_64).
PRINTK_LAYOUT = {
    "SIZE(printk_ringbuffer)": "88",
    "OFFSET(printk_ringbuffer.desc_ring)": "0",
    "OFFSET(printk_ringbuffer.text_data_ring)": "48",
    "OFFSET(printk_ringbuffer.fail)": "80",
    "SIZE(prb_desc_ring)": "48",
    "OFFSET(prb_desc_ring.count_bits)": "0",
    "OFFSET(prb_desc_ring.descs)": "8",
    "OFFSET(prb_desc_ring.infos)": "16",
    "OFFSET(prb_desc_ring.head_id)": "24",
    "OFFSET(prb_desc_ring.tail_id)": "32",
    "SIZE(prb_desc)": "24",
    "OFFSET(prb_desc.state_var)": "0",
    "OFFSET(prb_desc.text_blk_lpos)": "8",
    "SIZE(prb_data_blk_lpos)": "16",
    "OFFSET(prb_data_blk_lpos.begin)": "0",
    "OFFSET(prb_data_blk_lpos.next)": "8",
    "SIZE(printk_info)": "88",
    "OFFSET(printk_info.seq)": "0",
    "OFFSET(printk_info.ts_nsec)": "8",
    "OFFSET(printk_info.text_len)": "16",
    "OFFSET(printk_info.caller_id)": "20",
    "OFFSET(printk_info.dev_info)": "24",
    "SIZE(dev_printk_info)": "64",
    "OFFSET(dev_printk_info.subsystem)": "0",
    "LENGTH(printk_info_subsystem)": "16",
    "OFFSET(dev_printk_info.device)": "16",
    "LENGTH(printk_info_device)": "48",
    "SIZE(prb_data_ring)": "32",
    "OFFSET(prb_data_ring.size_bits)": "0",
    "OFFSET(prb_data_ring.data)": "8",
    "OFFSET(prb_data_ring.head_lpos)": "16",
    "OFFSET(prb_data_ring.tail_lpos)": "24",
    "SIZE(atomic_long_t)": "8",
    "OFFSET(atomic_long_t.counter)": "0",
}

#: The ring's pieces in the PT_LOAD at KDATA: the `prb` pointer, the ring structure (with
#: mapped memory on both sides, so an offset that wraps reads bytes, not a hole), the text
#: ring, the descriptors, the infos.
PRB_AT = 0x0
RING_AT = 0x4000
TEXT_AT = 0x8000
DESCS_AT = 0xA000
INFOS_AT = 0xB000
PRINTK_LOAD = 0x10000
#: The text of the ring's one record.
RECORD_TEXT = b"Linux version 6.1.0-test (hostile) #1"
RECORD_TS = 1_500_000_000


@dataclass(frozen=True)
class Ring:
    """What the ring claims: 2^count_bits descriptors, 2^size_bits text bytes, the ids."""

    count_bits: int = 4
    size_bits: int = 12
    head_id: int = 0
    tail_id: int = 0


def printk_memory(ring: Ring) -> bytes:
    """The PT_LOAD at KDATA: `prb` -> a lockless ring (layout PRINTK_LAYOUT) with one
    finalized record, id 0, at descriptor 0, its text at the start of the text ring."""
    mem = bytearray(PRINTK_LOAD)
    put(mem, PRB_AT, "Q", KDATA + RING_AT)
    put(mem, RING_AT + 0, "I", ring.count_bits)
    put(mem, RING_AT + 8, "Q", KDATA + DESCS_AT)
    put(mem, RING_AT + 16, "Q", KDATA + INFOS_AT)
    put(mem, RING_AT + 24, "Q", ring.head_id)
    put(mem, RING_AT + 32, "Q", ring.tail_id)
    put(mem, RING_AT + 48, "I", ring.size_bits)
    put(mem, RING_AT + 56, "Q", KDATA + TEXT_AT)
    # Record 0: state finalized (2 << 62) with id 0; its block [0, 8 + len) in the text ring.
    block = 8 + len(RECORD_TEXT)
    put(mem, DESCS_AT, "QQQ", 2 << 62, 0, (block + 7) // 8 * 8)
    put(mem, INFOS_AT, "QQH", 0, RECORD_TS, len(RECORD_TEXT))
    mem[INFOS_AT + 19] = 6 << 5  # level 6 (flags byte after the facility)
    put(mem, TEXT_AT, "Q", 0)  # the block's descriptor id
    mem[TEXT_AT + 8 : TEXT_AT + 8 + len(RECORD_TEXT)] = RECORD_TEXT
    return bytes(mem)


def printk_core(overrides: dict[str, str] | None = None, ring: Ring = Ring()) -> bytes:
    """An ELF core of the synthetic kernel with the lockless printk ring at KDATA and its
    VMCOREINFO (PRINTK_LAYOUT with `overrides`)."""
    entries: dict[str, str | None] = {"SYMBOL(prb)": hexaddr(KDATA + PRB_AT)}
    entries.update(PRINTK_LAYOUT)
    entries.update(overrides or {})
    return elfwriter.elf_core(
        synthetic_vmcoreinfo(entries), [Load(KDATA, KDATA_PHYS, printk_memory(ring))]
    )


# -- 4. many large VMCOREINFO notes -----------------------------------------------------------


def vmcoreinfo_notes_core(count: int = 64, size: int = (1 << 20) - 64) -> bytes:
    """An ELF core with `count` VMCOREINFO notes of `size` bytes each (64 x 1 MiB by default,
    a little under so that all of them fit the 64 MiB a core's notes may hold), every text
    different (`Knn_iiiiii=1` lines); the first starts with the synthetic kernel's
    VMCOREINFO."""
    template = b"".join(b"K00_%06d=1\n" % i for i in range(size // 12 + 1))
    notes = []
    for n in range(count):
        text = template.replace(b"K00_", b"K%02d_" % n)
        if n == 0:
            text = synthetic_vmcoreinfo() + text
        notes.append((b"VMCOREINFO", 0, text[:size]))
    return elfwriter.elf_core(None, [Load(KDATA, KDATA_PHYS, bytes(PAGE))], extra_notes=notes)


# -- 6. a string table without a NUL ----------------------------------------------------------


def section_headers(image: bytes) -> list[tuple[int, ...]]:
    """The ELF64 LE section headers: (name, type, flags, addr, offset, size, link, info,
    align, entsize) each."""
    shoff = struct.unpack_from("<Q", image, 40)[0]
    shnum = struct.unpack_from("<H", image, 60)[0]
    return [struct.unpack_from("<IIQQQQIIQQ", image, shoff + 64 * i) for i in range(shnum)]


def nul_less_strtab_exec(symbols: int = 50_000, strtab_size: int = 2_000_000) -> bytes:
    """An ELF kernel image whose `.symtab` holds `symbols` global functions in `.text` and
    whose `.strtab` is `strtab_size` bytes of 'A' (no NUL anywhere), the names spread evenly
    over it: every name runs to the end of the table (1 MB on average). The tables are
    appended to a small image and its section headers pointed at them."""
    image = bytearray(elfwriter.elf_exec([elfwriter.Symbol("placeholder", TEXT_ADDR)]))
    headers = section_headers(bytes(image))
    shoff = struct.unpack_from("<Q", image, 40)[0]
    [symtab_at] = [i for i, h in enumerate(headers) if h[1] == elfwriter.SHT_SYMTAB]
    strtab_at = headers[symtab_at][6]
    [text] = [
        i
        for i, h in enumerate(headers)
        if h[1] == elfwriter.SHT_PROGBITS and h[2] & elfwriter.SHF_EXECINSTR
    ]
    entry = struct.Struct("<IBBHQQ")
    info = (elfwriter.STB_GLOBAL << 4) | elfwriter.STT_FUNC
    step = strtab_size // symbols
    symtab = bytes(entry.size) + b"".join(
        entry.pack(i * step, info, 0, text, TEXT_ADDR + i, 0) for i in range(symbols)
    )
    image.extend(bytes(-len(image) % 8))
    for index, data in ((symtab_at, symtab), (strtab_at, b"A" * strtab_size)):
        # Elf64_Shdr: sh_offset at 24, sh_size at 32.
        struct.pack_into("<QQ", image, shoff + 64 * index + 24, len(image), len(data))
        image.extend(data)
    return bytes(image)


# -- 7 and 11. cores to write into --------------------------------------------------------------


def pattern_page(n: int) -> bytes:
    line = f"<page {n}>".encode()
    return (line * (PAGE // len(line) + 1))[:PAGE]


@dataclass(frozen=True)
class CutElf:
    image: bytes
    #: Kernel virtual addresses: past the end of the file, and 8 bytes before it.
    missing: int
    straddling: int


def cut_elf_core() -> CutElf:
    """An ELF core whose only PT_LOAD (3 pages at KDATA) is cut halfway through its second
    page: the file ends there, the header still claims all three."""
    image, layout = elfwriter.elf_core_with_layout(
        synthetic_vmcoreinfo(),
        [Load(KDATA, KDATA_PHYS, b"".join(pattern_page(n) for n in range(3)))],
    )
    start = layout.load_offsets[0]
    cut_at = start + PAGE + PAGE // 2
    return CutElf(
        image=kw.cut(image, cut_at),
        missing=KDATA + 2 * PAGE + 16,
        straddling=KDATA + (cut_at - start) - 8,
    )


#: The kdump's pages: the synthetic image's first frames (va = START_KERNEL_MAP + pa).
IMAGE_PFN = (TEXT_ADDR - START_KERNEL_MAP) // PAGE


def image_va(pfn: int, within: int = 0) -> int:
    return START_KERNEL_MAP + pfn * PAGE + within


def raw_kdump() -> tuple[bytes, kw.KdumpLayout]:
    """An uncompressed kdump of three pages of the synthetic image (pfns IMAGE_PFN..+2)."""
    spec = KdumpSpec(
        max_mapnr=IMAGE_PFN + 16,
        pages={IMAGE_PFN + n: pattern_page(n) for n in range(3)},
        vmcoreinfo=synthetic_vmcoreinfo(),
        compress=None,
    )
    return kw.build_with_layout(spec)


@dataclass(frozen=True)
class CutKdump:
    image: bytes
    missing: int
    straddling: int


def cut_kdump() -> CutKdump:
    """The raw kdump cut 100 bytes into its last page's data."""
    image, layout = raw_kdump()
    last = IMAGE_PFN + 2
    cut_at = layout.pages[last].offset + 100
    return CutKdump(
        image=kw.cut(image, cut_at),
        missing=image_va(last, 200),
        straddling=image_va(last, 100 - 8),
    )


def kdump_with_descriptor_offset(offset: int) -> tuple[bytes, int]:
    """The raw kdump with its last page's descriptor pointing at file offset `offset`; and
    a kernel virtual address in that page."""
    image, layout = raw_kdump()
    out = bytearray(image)
    last = IMAGE_PFN + 2
    struct.pack_into("<Q", out, layout.pages[last].at, offset)
    return bytes(out), image_va(last, 16)
