"""makedumpfile's kdump-compressed files ("diskdump"), written with `struct` only, for the tests.

The layout is the C structs of makedumpfile's `diskdump_mod.h` as the producer's compiler lays
them out, so it depends on the dump's ABI (`ABIS`): the width of `long` (the timestamp and the
sub-header's `unsigned long` fields), the alignment of `long long`/`off_t` in the sub-header
(i386 packs them at 4 bytes, "32pack"; 32-bit Arm aligns them to 8, "32pad") and the byte
order. In blocks of `block_size` bytes:

    block 0             struct disk_dump_header (464 bytes on 64-bit ABIs, 452 on 32-bit)
    block 1...          struct kdump_sub_header, then the ELF note area (v4+) and VMCOREINFO
    1 + sub_hdr_size    bitmap_blocks blocks: the memory bitmap (pages that exist), then the
                        dumpable bitmap (pages written), each half rounded up to whole blocks
    then                one 24-byte struct page_desc per dumpable page of the whole dump
    then                the page data: the shared zero page first (if any), then each page,
                        raw or zlib-compressed, in pfn order

As makedumpfile does, a split part (`split=(start, end)`) carries the full bitmaps of the whole
dump and reserves the descriptor table for every dumpable page of the dump, but fills only the
first descriptors, one per dumpable pfn in [start, end) (readers count a pfn's descriptor from
`start`, see libkdumpfile's `read_bitmap`), and holds only those pages' data; the rest of the
table is zeros. An incomplete dump (makedumpfile ran out of space) has status bit
DUMP_DH_COMPRESSED_INCOMPLETE and its last descriptors zero (offset 0, size 0), their data
never written.

`build(spec)` returns the file; `build_with_layout(spec)` also says where everything went, for
tests that cut or patch it. `split_parts(spec, ranges)` makes the parts of a split dump,
`flatten(image, ...)` the makedumpfile flattened stream (`makedumpfile -F`), `cut(image, at)`
a file truncated at `at`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace

KDUMP_SIGNATURE = "KDUMP   "
DISKDUMP_SIGNATURE = "DISKDUMP"

DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
DUMP_DH_EXCLUDED_VMEMMAP = 0x10
DUMP_DH_COMPRESSED_ZSTD = 0x20

PAGE_DESC_SIZE = 24
UTS_LEN = 65
UTSNAME_OFFSET = 12
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
UINT_MAX = 0xFFFF_FFFF

MDF_SIGNATURE = b"makedumpfile"
MDF_HEADER_SIZE = 4096
MDF_TYPE_FLAT_HEADER = 1
MDF_VERSION_FLAT_HEADER = 1
MDF_END_FLAG = -1

#: The release the synthetic kernel of tests/synthetic.py reports.
DEFAULT_RELEASE = "6.1.0-test"


@dataclass(frozen=True)
class Abi:
    """How the producer's compiler laid the structs out. `machine` is the utsname machine the
    kernel reports (`uname -m`), the header's default."""

    name: str
    machine: str
    long_size: int
    llong_align: int
    big_endian: bool

    @property
    def endian(self) -> str:
        return ">" if self.big_endian else "<"


ABIS: dict[str, Abi] = {
    "x86_64": Abi("x86_64", "x86_64", 8, 8, False),
    "aarch64": Abi("aarch64", "aarch64", 8, 8, False),
    # i386: `long long` is 4-aligned inside structs (libkdumpfile's kdump_sub_header_32pack).
    "i386": Abi("i386", "i686", 4, 4, False),
    # 32-bit Arm (EABI): `long long` is 8-aligned (libkdumpfile's kdump_sub_header_32pad).
    "arm": Abi("arm", "armv7l", 4, 8, False),
    "ppc64": Abi("ppc64", "ppc64", 8, 8, True),
    "s390x": Abi("s390x", "s390x", 8, 8, True),
}


def _c_layout(fields: Sequence[tuple[str, int, int]]) -> tuple[dict[str, tuple[int, int]], int]:
    """Offsets of C struct members `(name, size, alignment)`, as a C compiler places them:
    name -> (offset, size), and the struct's size (padded to its largest alignment)."""
    offsets: dict[str, tuple[int, int]] = {}
    pos = 0
    widest = 1
    for name, size, align in fields:
        pos = (pos + align - 1) // align * align
        offsets[name] = (pos, size)
        pos += size
        widest = max(widest, align)
    return offsets, (pos + widest - 1) // widest * widest


def header_layout(abi: Abi) -> tuple[dict[str, tuple[int, int]], int]:
    """struct disk_dump_header: member -> (offset, size), and sizeof."""
    long = abi.long_size
    fields = [
        ("signature", 8, 1),
        ("header_version", 4, 4),
        ("utsname", UTS_LEN * len(UTS_FIELDS), 1),
        ("tv_sec", long, long),
        ("tv_usec", long, long),
    ]
    for name in (
        "status",
        "block_size",
        "sub_hdr_size",
        "bitmap_blocks",
        "max_mapnr",
        "total_ram_blocks",
        "device_blocks",
        "written_blocks",
        "current_cpu",
        "nr_cpus",
    ):
        fields.append((name, 4, 4))
    fields.append(("tasks", 0, long))  # struct task_struct *tasks[0]: aligns the struct
    return _c_layout(fields)


def sub_header_layout(abi: Abi) -> tuple[dict[str, tuple[int, int]], int]:
    """struct kdump_sub_header: member -> (offset, size), and sizeof. `off_t` is 64-bit
    (makedumpfile is built with large-file support) and aligned like `long long`."""
    long = abi.long_size
    ll = abi.llong_align
    return _c_layout(
        [
            ("phys_base", long, long),
            ("dump_level", 4, 4),
            ("split", 4, 4),
            ("start_pfn", long, long),
            ("end_pfn", long, long),
            ("offset_vmcoreinfo", 8, ll),
            ("size_vmcoreinfo", long, long),
            ("offset_note", 8, ll),
            ("size_note", long, long),
            ("offset_eraseinfo", 8, ll),
            ("size_eraseinfo", long, long),
            ("start_pfn_64", 8, ll),
            ("end_pfn_64", 8, ll),
            ("max_mapnr_64", 8, ll),
        ]
    )


def _ceil_div(value: int, by: int) -> int:
    return -(-value // by)


def _put(buf: bytearray, at: int, size: int, value: int, endian: str) -> None:
    code = {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
    struct.pack_into(endian + code, buf, at, value & ((1 << (8 * size)) - 1))


def elf_note(name: bytes, n_type: int, desc: bytes, *, big_endian: bool = False) -> bytes:
    """One ELF note (the kernel's crash notes: 4-byte header words and padding)."""
    name_z = name + b"\0"
    head = struct.pack((">" if big_endian else "<") + "III", len(name_z), len(desc), n_type)
    pad = (-len(name_z)) % 4
    return head + name_z + bytes(pad) + desc + bytes((-len(desc)) % 4)


@dataclass
class KdumpSpec:
    """What to write. Pages are page frame numbers: `pages` the pages written (data shorter
    than a block is padded with zeros), `excluded` pages that exist but were filtered out
    (memory bitmap only). Every other pfn below `max_mapnr` is a hole (in neither bitmap).

    - `version`: header_version 0..6. Version 0 has no sub-header; 1-2 no VMCOREINFO;
      3 VMCOREINFO in the sub-header; 4+ an ELF note area too; 6 the 64-bit pfn fields.
    - `vmcoreinfo_in`: "auto" (v3: "subheader"; v4+: "both", as makedumpfile writes it: a
      VMCOREINFO note, and offset_vmcoreinfo pointing at its text), "subheader" (a separate
      blob; no note), "note" (the note only; offset_vmcoreinfo 0).
    - `machine`: the utsname machine; None is the ABI's `uname -m` (`ABIS`); "" writes none.
    - `compress`: "zlib" compresses each page (level 1, as makedumpfile) and keeps it raw when
      that does not make it smaller, or when its pfn is in `raw_pfns`; None writes raw pages.
    - `zero_page`: makedumpfile's shared zero page (dump level 1, DL_EXCLUDE_ZERO): one block
      of zeros at the start of the data, which every all-zero page's descriptor points at.
    - `split`: (start_pfn, end_pfn) of a `makedumpfile --split` part.
    - `incomplete_tail`: the last N descriptors of this file left zero and their data not
      written, with status DUMP_DH_COMPRESSED_INCOMPLETE; `incomplete=True` sets the status
      bit alone.
    - `header_max_mapnr`, `max_mapnr_64`, `sub_hdr_size`, `bitmap_blocks`, `status_extra`:
      override what the header says (None: what makedumpfile writes).
    """

    abi: str = "x86_64"
    version: int = 6
    signature: str = KDUMP_SIGNATURE
    block_size: int = 4096
    max_mapnr: int = 64
    pages: Mapping[int, bytes] = field(default_factory=dict)
    excluded: AbstractSet[int] = frozenset()
    vmcoreinfo: bytes | None = None
    vmcoreinfo_in: str = "auto"
    extra_notes: Sequence[tuple[bytes, int, bytes]] = ()
    compress: str | None = None
    raw_pfns: AbstractSet[int] = frozenset()
    zero_page: bool = False
    split: tuple[int, int] | None = None
    incomplete_tail: int = 0
    incomplete: bool = False
    machine: str | None = None
    sysname: str = "Linux"
    nodename: str = "kdump-test"
    release: str = DEFAULT_RELEASE
    uts_version: str = "#1 SMP PREEMPT_DYNAMIC"
    domainname: str = "(none)"
    timestamp: tuple[int, int] = (0, 0)
    phys_base: int = 0
    dump_level: int = 31
    nr_cpus: int = 1
    header_max_mapnr: int | None = None
    max_mapnr_64: int | None = None
    sub_hdr_size: int | None = None
    bitmap_blocks: int | None = None
    status_extra: int = 0


@dataclass(frozen=True)
class PageDesc:
    """A page's descriptor as written (`at`: the descriptor's file offset). A descriptor
    left zero by an incomplete dump has offset, size and flags 0."""

    at: int
    offset: int
    size: int
    flags: int


@dataclass
class KdumpLayout:
    """Where `build_with_layout` put things (file offsets; sizes in bytes)."""

    abi: Abi
    header_size: int
    header_fields: dict[str, tuple[int, int]]
    sub_header: tuple[int, int]
    sub_header_fields: dict[str, tuple[int, int]]
    notes: tuple[int, int] | None
    vmcoreinfo: tuple[int, int] | None
    bitmap1: int
    bitmap2: int
    bitmap_size: int
    descriptors: int
    descriptor_slots: int
    data: int
    zero_page: int | None
    pages: dict[int, PageDesc]
    size: int


def _uts(spec: KdumpSpec, abi: Abi) -> bytes:
    machine = abi.machine if spec.machine is None else spec.machine
    values = (
        spec.sysname,
        spec.nodename,
        spec.release,
        spec.uts_version,
        machine,
        spec.domainname,
    )
    out = b""
    for value in values:
        raw = value.encode()
        if len(raw) >= UTS_LEN:
            raise ValueError(f"utsname field too long: {value!r}")
        out += raw.ljust(UTS_LEN, b"\0")
    return out


def _check(spec: KdumpSpec) -> None:
    if spec.abi not in ABIS:
        raise ValueError(f"unknown ABI {spec.abi!r}; known: {sorted(ABIS)}")
    size = spec.block_size
    if size <= 0 or size & (size - 1):
        raise ValueError(f"block_size {size} is not a power of two")
    if len(spec.signature.encode()) != 8:
        raise ValueError(f"signature {spec.signature!r} is not 8 bytes")
    both = set(spec.pages) & set(spec.excluded)
    if both:
        raise ValueError(f"pfns both written and excluded: {sorted(both)}")
    for pfn in (*spec.pages, *spec.excluded):
        if not 0 <= pfn < spec.max_mapnr:
            raise ValueError(f"pfn {pfn:#x} outside max_mapnr {spec.max_mapnr:#x}")
    for pfn, data in spec.pages.items():
        if len(data) > size:
            raise ValueError(f"pfn {pfn:#x}: {len(data)} bytes is more than a block")
    if spec.split is not None:
        start, end = spec.split
        if not 0 <= start <= end:
            raise ValueError(f"split range {spec.split} is not a range")
    if spec.vmcoreinfo_in not in ("auto", "subheader", "note", "both"):
        raise ValueError(f"vmcoreinfo_in {spec.vmcoreinfo_in!r}")
    if spec.compress not in (None, "zlib"):
        raise ValueError(f"compress {spec.compress!r}: only zlib or None")


def _vmcoreinfo_places(spec: KdumpSpec) -> tuple[bool, bool]:
    """(in a note, as a separate sub-header blob)."""
    if spec.vmcoreinfo is None or spec.version < 3:
        return False, False
    mode = spec.vmcoreinfo_in
    if mode == "auto":
        mode = "subheader" if spec.version == 3 else "both"
    if spec.version == 3 or mode == "subheader":
        return False, True
    return True, False


def build_with_layout(spec: KdumpSpec) -> tuple[bytes, KdumpLayout]:
    """The kdump file of `spec`, and where its parts are."""
    _check(spec)
    abi = ABIS[spec.abi]
    e = abi.endian
    bs = spec.block_size
    hdr_fields, hdr_size = header_layout(abi)
    sub_fields, sub_size = sub_header_layout(abi)

    # -- the sub-header's tail: the ELF note area, or a VMCOREINFO blob -----------------------
    in_note, in_blob = _vmcoreinfo_places(spec)
    notes = b""
    vmcoreinfo_in_notes: int | None = None
    if spec.version >= 4:
        for note_name, n_type, note_desc in spec.extra_notes:
            notes += elf_note(note_name, n_type, note_desc, big_endian=abi.big_endian)
        if in_note and spec.vmcoreinfo is not None:
            note = elf_note(b"VMCOREINFO", 0, spec.vmcoreinfo, big_endian=abi.big_endian)
            vmcoreinfo_in_notes = len(notes) + 12 + 12  # header, "VMCOREINFO\0" padded to 12
            notes += note
    after_kh = bs + sub_size
    notes_at = after_kh if notes else None
    blob_at = after_kh + len(notes) if in_blob else None
    blob = spec.vmcoreinfo if in_blob and spec.vmcoreinfo is not None else b""
    tail_end = after_kh + len(notes) + len(blob)
    if spec.sub_hdr_size is not None:
        sub_hdr_size = spec.sub_hdr_size
    elif spec.version < 1:
        sub_hdr_size = 0
    else:
        sub_hdr_size = _ceil_div(tail_end - bs, bs)

    # -- bitmaps -------------------------------------------------------------------------------
    half_blocks = _ceil_div(_ceil_div(spec.max_mapnr, 8), bs)
    bitmap_blocks = spec.bitmap_blocks if spec.bitmap_blocks is not None else 2 * half_blocks
    half = half_blocks * bs
    bitmap1 = bytearray(half)
    bitmap2 = bytearray(half)
    for pfn in set(spec.pages) | set(spec.excluded):
        bitmap1[pfn >> 3] |= 1 << (pfn & 7)
    for pfn in spec.pages:
        bitmap2[pfn >> 3] |= 1 << (pfn & 7)
    bitmap1_at = (1 + sub_hdr_size) * bs
    bitmap2_at = bitmap1_at + half

    # -- descriptors and data ------------------------------------------------------------------
    dumpable = sorted(spec.pages)
    if spec.split is not None:
        start, end = spec.split
        held = [pfn for pfn in dumpable if start <= pfn < end]
    else:
        held = dumpable
    descriptors_at = (1 + sub_hdr_size + bitmap_blocks) * bs
    data_at = descriptors_at + PAGE_DESC_SIZE * len(dumpable)
    data = bytearray()
    zero_at: int | None = None
    if spec.zero_page:
        zero_at = data_at
        data += bytes(bs)
    missing = set(held[len(held) - spec.incomplete_tail :]) if spec.incomplete_tail else set()
    table = bytearray(PAGE_DESC_SIZE * len(dumpable))
    placed: dict[int, PageDesc] = {}
    for index, pfn in enumerate(held):
        at = descriptors_at + index * PAGE_DESC_SIZE
        if pfn in missing:
            placed[pfn] = PageDesc(at, 0, 0, 0)
            continue
        page = bytes(spec.pages[pfn]).ljust(bs, b"\0")
        if zero_at is not None and page.count(0) == bs:
            desc = PageDesc(at, zero_at, bs, 0)
        else:
            stored, flags = page, 0
            if spec.compress == "zlib" and pfn not in spec.raw_pfns:
                packed = zlib.compress(page, 1)
                if len(packed) < bs:
                    stored, flags = packed, DUMP_DH_COMPRESSED_ZLIB
            desc = PageDesc(at, data_at + len(data), len(stored), flags)
            data += stored
        placed[pfn] = desc
        struct.pack_into(
            e + "QIIQ", table, index * PAGE_DESC_SIZE, desc.offset, desc.size, desc.flags, 0
        )

    # -- the header ----------------------------------------------------------------------------
    status = spec.status_extra
    if spec.compress == "zlib":
        status |= DUMP_DH_COMPRESSED_ZLIB
    if spec.incomplete or spec.incomplete_tail:
        status |= DUMP_DH_COMPRESSED_INCOMPLETE
    header = bytearray(hdr_size)
    header[0:8] = spec.signature.encode()
    values = {
        "header_version": spec.version,
        "tv_sec": spec.timestamp[0],
        "tv_usec": spec.timestamp[1],
        "status": status,
        "block_size": bs,
        "sub_hdr_size": sub_hdr_size,
        "bitmap_blocks": bitmap_blocks,
        "max_mapnr": (
            spec.header_max_mapnr
            if spec.header_max_mapnr is not None
            else min(spec.max_mapnr, UINT_MAX)
        ),
        "nr_cpus": spec.nr_cpus,
    }
    for member, value in values.items():
        at, width = hdr_fields[member]
        _put(header, at, width, value, e)
    uts_at = hdr_fields["utsname"][0]
    header[uts_at : uts_at + UTS_LEN * len(UTS_FIELDS)] = _uts(spec, abi)

    sub = bytearray(sub_size)
    sub_values: dict[str, int] = {}
    if spec.version >= 1:
        sub_values["phys_base"] = spec.phys_base
        sub_values["dump_level"] = spec.dump_level
    if spec.version >= 2 and spec.split is not None:
        start, end = spec.split
        long_max = (1 << (8 * abi.long_size)) - 1
        sub_values["split"] = 1
        sub_values["start_pfn"] = min(start, UINT_MAX, long_max)
        sub_values["end_pfn"] = min(end, UINT_MAX, long_max)
        if spec.version >= 6:
            sub_values["start_pfn_64"] = start
            sub_values["end_pfn_64"] = end
    vmcoreinfo_place: tuple[int, int] | None = None
    if spec.vmcoreinfo is not None:
        if blob_at is not None:
            vmcoreinfo_place = (blob_at, len(blob))
        elif vmcoreinfo_in_notes is not None and notes_at is not None:
            vmcoreinfo_place = (notes_at + vmcoreinfo_in_notes, len(spec.vmcoreinfo))
    if (
        spec.version >= 3
        and vmcoreinfo_place is not None
        and (blob_at is not None or spec.vmcoreinfo_in in ("auto", "both"))
    ):
        sub_values["offset_vmcoreinfo"] = vmcoreinfo_place[0]
        sub_values["size_vmcoreinfo"] = vmcoreinfo_place[1]
    if spec.version >= 4 and notes_at is not None:
        sub_values["offset_note"] = notes_at
        sub_values["size_note"] = len(notes)
    if spec.version >= 6:
        sub_values["max_mapnr_64"] = (
            spec.max_mapnr_64 if spec.max_mapnr_64 is not None else spec.max_mapnr
        )
    for member, value in sub_values.items():
        at, width = sub_fields[member]
        _put(sub, at, width, value, e)

    # -- the file ------------------------------------------------------------------------------
    size = data_at + len(data)
    image = bytearray(max(size, descriptors_at))
    image[0:hdr_size] = header
    if spec.version >= 1:
        image[bs : bs + sub_size] = sub
    if notes_at is not None:
        image[notes_at : notes_at + len(notes)] = notes
    if blob_at is not None:
        image[blob_at : blob_at + len(blob)] = blob
    image[bitmap1_at : bitmap1_at + half] = bitmap1
    image[bitmap2_at : bitmap2_at + half] = bitmap2
    image[descriptors_at:data_at] = table
    image[data_at:size] = data
    layout = KdumpLayout(
        abi=abi,
        header_size=hdr_size,
        header_fields=hdr_fields,
        sub_header=(bs, sub_size),
        sub_header_fields=sub_fields,
        notes=(notes_at, len(notes)) if notes_at is not None else None,
        vmcoreinfo=vmcoreinfo_place,
        bitmap1=bitmap1_at,
        bitmap2=bitmap2_at,
        bitmap_size=half,
        descriptors=descriptors_at,
        descriptor_slots=len(dumpable),
        data=data_at,
        zero_page=zero_at,
        pages=placed,
        size=len(image),
    )
    return bytes(image), layout


def build(spec: KdumpSpec) -> bytes:
    """The kdump file of `spec`."""
    return build_with_layout(spec)[0]


def split_parts(spec: KdumpSpec, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """The files of `makedumpfile --split` of `spec`'s dump, one per (start_pfn, end_pfn)."""
    return [build(replace(spec, split=pfns)) for pfns in ranges]


def even_ranges(max_mapnr: int, parts: int) -> list[tuple[int, int]]:
    """`parts` consecutive pfn ranges covering 0..max_mapnr (the last one ends at max_mapnr,
    as makedumpfile's do)."""
    step = -(-max_mapnr // parts)
    return [(i * step, min((i + 1) * step, max_mapnr)) for i in range(parts)]


def cut(image: bytes, at: int) -> bytes:
    """The file truncated at offset `at` (a dump cut short: disk full, a copy interrupted)."""
    return image[:at]


def flatten(
    image: bytes,
    chunk: int = 4096,
    reorder: bool = False,
    *,
    overlap: bool = False,
    skip_zeros: bool = False,
) -> bytes:
    """`image` as makedumpfile's flattened stream (`makedumpfile -F`; read back with
    `makedumpfile -R`): a 4096-byte header ("makedumpfile", type 1, version 1, big-endian),
    then records {be64 offset, be64 size, data} of `chunk` bytes each, then the end marker
    (-1, -1).

    - `reorder`: the records out of file order (every other one first, backwards, then the
      rest), as a producer writing descriptors and data through separate caches does.
    - `overlap`: before the real records, decoys of 0xee bytes covering every third chunk and
      straddling chunk boundaries; the later record wins, so the reassembled file is `image`.
    - `skip_zeros`: no record for an all-zero chunk (a hole), except the last one, which
      keeps the file's size.
    """
    if chunk <= 0:
        raise ValueError("chunk must be positive")
    header = struct.pack(
        ">16sqq", MDF_SIGNATURE, MDF_TYPE_FLAT_HEADER, MDF_VERSION_FLAT_HEADER
    ).ljust(MDF_HEADER_SIZE, b"\0")
    pieces = [(at, image[at : at + chunk]) for at in range(0, len(image), chunk)]
    if skip_zeros:
        pieces = [
            (at, data)
            for i, (at, data) in enumerate(pieces)
            if data.count(0) != len(data) or i == len(pieces) - 1
        ]
    if reorder:
        pieces = pieces[1::2][::-1] + pieces[0::2]
    decoys: list[tuple[int, bytes]] = []
    if overlap:
        # Only over bytes a real record writes again later (not over holes).
        written = {at for at, _ in pieces}
        for i, (at, data) in enumerate(sorted(pieces)):
            end = at + len(data)
            if i % 3 == 0:
                decoys.append((at, b"\xee" * len(data)))
            elif i % 3 == 1 and end in written:
                start = at + len(data) // 2
                length = min(chunk, len(image) - start)
                decoys.append((start, b"\xee" * length))
    records = [struct.pack(">qq", at, len(data)) + data for at, data in (*decoys, *pieces) if data]
    return header + b"".join(records) + struct.pack(">qq", MDF_END_FLAG, MDF_END_FLAG)


def unflatten(stream: bytes) -> bytes:
    """The file a flattened stream describes (what `makedumpfile -R` writes): records in
    stream order, later ones overwriting earlier ones; never-written bytes are zero."""
    if stream[: len(MDF_SIGNATURE)] != MDF_SIGNATURE:
        raise ValueError("not a flattened stream")
    out = bytearray()
    pos = MDF_HEADER_SIZE
    while True:
        at, size = struct.unpack_from(">qq", stream, pos)
        pos += 16
        if at == MDF_END_FLAG and size == MDF_END_FLAG:
            return bytes(out)
        if at < 0 or size < 0 or pos + size > len(stream):
            raise ValueError(f"bad flattened record at {pos - 16:#x}")
        if len(out) < at + size:
            out.extend(bytes(at + size - len(out)))
        out[at : at + size] = stream[pos : pos + size]
        pos += size
