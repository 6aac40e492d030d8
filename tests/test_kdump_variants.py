"""Every kdump-compressed variant a reader meets (SPEC §5, §8, §12, §13), on synthetic files.

The files come from tests/kdumpwriter.py, which writes makedumpfile's C structs for each ABI
(it reproduces real makedumpfile files byte for byte, and libkdumpfile reads every variant
here); the exec file is the synthetic kernel's System.map and the dump's VMCOREINFO is the
synthetic kernel's (tests/synthetic.py). Pages say which they are, so a read that returns
another page's bytes fails. Physical memory is read with `Kvm.read_physical`; a failed read
is the soft `invalid address (0x<hex>)` with `.address` (the first byte that failed) and
`.reason`, except data past the end of the file: the hard `short read` with `.partial`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import elfwriter
import kdumpwriter as kw
import kvm_rs
import pytest
import synthetic
from kdumpwriter import DISKDUMP_SIGNATURE, KDUMP_SIGNATURE, KdumpSpec
from synthetic import TEST_RELEASE, synthetic_vmcoreinfo

PAGE = 4096
NOT_HERE = "not in this part of a split dump"
#: The header's utsname machine, and what info.machine says, per ABI.
MACHINES = {"i386": "i386", "arm": "arm", "ppc64": "ppc64", "s390x": "s390x"}


# -- building and opening ---------------------------------------------------------------------


def page(pfn: int, size: int = PAGE, tag: int = 0) -> bytes:
    """A page that names itself (compressible; different for every pfn and tag)."""
    line = f"<pfn {pfn:#x} tag {tag}>".encode()
    return (line * (size // len(line) + 1))[:size]


def layout_pfns(max_mapnr: int) -> tuple[list[int], list[int]]:
    """(written pfns, excluded pfns) of a dump of `max_mapnr` frames (at least 16): low pages,
    one all-zero page (9), pages in the middle and the very last frame; the rest are holes."""
    mid = max_mapnr // 2
    written = sorted({0, 1, 2, 5, 9, mid, mid + 1, max_mapnr - 1})
    excluded = sorted({3, 6, mid + 2})
    return written, excluded


def make_spec(
    max_mapnr: int = 64, block_size: int = PAGE, tag: int = 0, **kwargs: Any
) -> KdumpSpec:
    """A dump of the synthetic kernel: `layout_pfns` pages, VMCOREINFO (PAGESIZE =
    block_size), zlib, makedumpfile's shared zero page."""
    written, excluded = layout_pfns(max_mapnr)
    pages = {pfn: bytes(block_size) if pfn == 9 else page(pfn, block_size, tag) for pfn in written}
    options: dict[str, Any] = {
        "max_mapnr": max_mapnr,
        "block_size": block_size,
        "pages": pages,
        "excluded": frozenset(excluded),
        "vmcoreinfo": synthetic_vmcoreinfo({"PAGESIZE": str(block_size)}),
        "compress": "zlib",
        "zero_page": True,
        "release": TEST_RELEASE,
    }
    options.update(kwargs)
    return KdumpSpec(**options)


def system_map(folder: Path) -> Path:
    path = folder / "System.map-test"
    if not path.exists():
        path.write_bytes(elfwriter.system_map(synthetic.SYMBOLS))
    return path


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def open_kdump(folder: Path, cores: Path | Sequence[Path], **kwargs: Any) -> kvm_rs.Kvm:
    """The dump(s) with the synthetic System.map."""
    core: Any = str(cores) if isinstance(cores, Path) else [str(p) for p in cores]
    return kvm_rs.Kvm(str(system_map(folder)), core, **kwargs)


def given_vmcoreinfo(spec: KdumpSpec) -> dict[str, Any]:
    """Versions 0-2 have no room for VMCOREINFO: the caller gives it (SPEC §13)."""
    return {"vmcoreinfo": spec.vmcoreinfo} if spec.version < 3 else {}


# -- reading ----------------------------------------------------------------------------------


def read_fails(kd: kvm_rs.Kvm, paddr: int, size: int, address: int | None = None) -> Any:
    """A read_physical that fails softly at `address` (default: paddr); returns the error."""
    address = paddr if address is None else address
    with pytest.raises(kvm_rs.KvmError) as raised:
        kd.read_physical(paddr, size)
    error = raised.value
    assert str(error) == f"invalid address ({address:#x})"
    assert error.address == address
    assert error.hard is False
    return error


def assert_reason(
    kd: kvm_rs.Kvm, paddr: int, size: int, reason: str, at: int | None = None
) -> None:
    assert read_fails(kd, paddr, size, at).reason == reason


def assert_pages(kd: kvm_rs.Kvm, spec: KdumpSpec, pfns: Sequence[int] | None = None) -> None:
    """Every page of `pfns` (default: all written) reads whole and in part, exactly."""
    bs = spec.block_size
    for pfn in spec.pages if pfns is None else pfns:
        expected = bytes(spec.pages[pfn]).ljust(bs, b"\0")
        assert kd.read_physical(pfn * bs, bs) == expected, f"pfn {pfn:#x}"
        assert kd.read_physical(pfn * bs + 100, 50) == expected[100:150], f"pfn {pfn:#x}"


def assert_dump(kd: kvm_rs.Kvm, spec: KdumpSpec) -> None:
    """The whole dump of `make_spec`: pages, a read across two pages, excluded pages, a read
    that runs into an excluded page, the frame at max_mapnr."""
    bs = spec.block_size
    assert_pages(kd, spec)
    assert kd.read_physical(2 * bs - 8, 16) == spec.pages[1][-8:] + spec.pages[2][:8]
    for pfn in spec.excluded:
        assert_reason(kd, pfn * bs + 8, 16, "excluded")
    assert_reason(kd, 3 * bs - 8, 16, "excluded", at=3 * bs)
    assert_reason(kd, 4 * bs + 8, 8, "not in the dump")  # a hole: in neither bitmap
    assert_reason(kd, spec.max_mapnr * bs, 8, "not in the dump")
    last = (spec.max_mapnr - 1) * bs
    assert_reason(kd, last + bs - 4, 8, "not in the dump", at=spec.max_mapnr * bs)


def assert_plain_info(kd: kvm_rs.Kvm, spec: KdumpSpec, fmt: str = "kdump") -> None:
    info = kd.info
    assert info.format == fmt
    assert info.page_size == spec.block_size
    assert info.osrelease == TEST_RELEASE
    assert info.compression == ("zlib" if spec.compress == "zlib" else None)
    assert (info.incomplete, info.truncated) == (False, False)
    assert (info.pfn_range, info.parts) == (None, 1)


# -- header versions and signatures -----------------------------------------------------------

VERSION_CASES = [
    pytest.param(version, signature, id=f"v{version}-{signature.strip().lower()}")
    for version in range(7)
    for signature in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE)
]


def version_spec(version: int, signature: str) -> KdumpSpec:
    # KDUMP files zlib-compressed with the shared zero page; DISKDUMP ones raw, without it.
    compress = "zlib" if signature == KDUMP_SIGNATURE else None
    return make_spec(
        version=version,
        signature=signature,
        compress=compress,
        zero_page=compress is not None,
    )


@pytest.mark.parametrize(("version", "signature"), VERSION_CASES)
def test_header_version(tmp_path: Path, version: int, signature: str) -> None:
    """Versions 0-6 (0: no sub-header; 1-2: no VMCOREINFO, given by the caller; 3: VMCOREINFO
    in the sub-header; 4+: also the note area; 6: 64-bit pfn fields), both signatures."""
    spec = version_spec(version, signature)
    core = write(tmp_path, "dump.kdump", kw.build(spec))
    with open_kdump(tmp_path, core, **given_vmcoreinfo(spec)) as kd:
        assert_plain_info(kd, spec)
        assert kd.info.machine == "x86_64"
        assert kd.info.vmcoreinfo["SYMBOL(_stext)"] == f"{synthetic.TEXT_ADDR:x}"
        # v4+: makedumpfile's layout, a VMCOREINFO note in the sub-header's note area and
        # offset_vmcoreinfo pointing at its text: all of it is the kdump header's.
        assert kd.info.vmcoreinfo_source == ("given" if version < 3 else "kdump-header")
        assert_dump(kd, spec)


@pytest.mark.parametrize("where", ["subheader", "note", "both"])
def test_vmcoreinfo_placement(tmp_path: Path, where: str) -> None:
    """Version 6 with VMCOREINFO only as a sub-header blob, only as an ELF note, or both."""
    spec = make_spec(vmcoreinfo_in=where)
    with open_kdump(tmp_path, write(tmp_path, "dump.kdump", kw.build(spec))) as kd:
        assert kd.info.osrelease == TEST_RELEASE
        assert kd.info.vmcoreinfo["OSRELEASE"] == TEST_RELEASE
        assert kd.info.vmcoreinfo["PAGESIZE"] == "4096"
        assert kd.info.vmcoreinfo_source == "kdump-header"
        assert_pages(kd, spec)


def test_given_vmcoreinfo_replaces_the_dumps(tmp_path: Path) -> None:
    """`vmcoreinfo=` wins over what the dump carries (SPEC §13)."""
    spec = make_spec()
    given = synthetic_vmcoreinfo({"CRASHTIME": "1234"})
    core = write(tmp_path, "dump.kdump", kw.build(spec))
    with open_kdump(tmp_path, core, vmcoreinfo=given) as kd:
        assert kd.info.vmcoreinfo_source == "given"
        assert kd.info.vmcoreinfo["CRASHTIME"] == "1234"
        assert_pages(kd, spec)


# -- 32-bit layouts: the max_mapnr that looks like a block size -------------------------------

MAPNRS = [512, 4096, 0x40000, 1 << 20]


@pytest.mark.parametrize("max_mapnr", MAPNRS, ids=[f"mapnr-{m:#x}" for m in MAPNRS])
@pytest.mark.parametrize("abi", ["i386", "arm"])
def test_32bit_layout(tmp_path: Path, abi: str, max_mapnr: int) -> None:
    """i386 (`long long` 4-aligned in the sub-header) and 32-bit Arm (8-aligned). The 32-bit
    header's max_mapnr sits at offset 428, where the 64-bit header has block_size: a power
    of two there must not make the header read as 64-bit."""
    spec = make_spec(max_mapnr=max_mapnr, abi=abi, machine=MACHINES[abi])
    image, layout = kw.build_with_layout(spec)
    assert layout.header_fields["max_mapnr"] == (428, 4)
    assert struct.unpack_from("<I", image, 428)[0] == max_mapnr
    with open_kdump(tmp_path, write(tmp_path, "dump.kdump", image)) as kd:
        assert_plain_info(kd, spec)
        assert kd.info.machine == MACHINES[abi]
        assert_dump(kd, spec)


@pytest.mark.parametrize("version", [3, 5])
@pytest.mark.parametrize("abi", ["i386", "arm"])
def test_32bit_older_versions(tmp_path: Path, abi: str, version: int) -> None:
    """Versions without max_mapnr_64: the 32-bit header field is the only one."""
    spec = make_spec(max_mapnr=4096, abi=abi, machine=MACHINES[abi], version=version)
    with open_kdump(tmp_path, write(tmp_path, "dump.kdump", kw.build(spec))) as kd:
        assert_plain_info(kd, spec)
        assert_dump(kd, spec)


@pytest.mark.parametrize("machine", ["uname", "", "Unknown"])
@pytest.mark.parametrize("abi", ["i386", "arm"])
def test_32bit_machine_names(tmp_path: Path, abi: str, machine: str) -> None:
    """What real 32-bit kernels write (`i686`, `armv7l`: info.machine says `i386`, `arm`),
    nothing, or `Unknown`: the layout still comes out right, max_mapnr 4096 (= a block size
    at offset 428) included."""
    name = kw.ABIS[abi].machine if machine == "uname" else machine
    spec = make_spec(max_mapnr=4096, abi=abi, machine=name)
    with open_kdump(tmp_path, write(tmp_path, "dump.kdump", kw.build(spec))) as kd:
        assert kd.info.page_size == PAGE
        if machine == "uname":
            assert kd.info.machine == MACHINES[abi]
        assert_dump(kd, spec)


@pytest.mark.parametrize("machine", ["x86_64", ""], ids=["x86_64", "no-machine"])
def test_64bit_header_that_looks_32bit(tmp_path: Path, machine: str) -> None:
    """The converse trap: a 64-bit header whose timestamp.tv_usec (offset 416, the 32-bit
    header's block_size) is a power of two, and whose status (424, the 32-bit bitmap_blocks)
    covers the 32-bit reading's max_mapnr (428, here the block size). Read as 32-bit, the
    header makes sense; it is not (libkdumpfile, which tries 32-bit first, misreads it)."""
    spec = make_spec(machine=machine, timestamp=(1_700_000_000, 4096), status_extra=0x10)
    with open_kdump(tmp_path, write(tmp_path, "dump.kdump", kw.build(spec))) as kd:
        assert kd.info.page_size == PAGE
        assert kd.info.compression == "zlib"
        if machine:
            assert kd.info.machine == machine
        assert_dump(kd, spec)


def test_excluded_vmemmap_status_bit(tmp_path: Path) -> None:
    """Status bit 0x10 (makedumpfile -e) is neither a compression nor incompleteness."""
    spec = make_spec(status_extra=kw.DUMP_DH_EXCLUDED_VMEMMAP)
    with open_kdump(tmp_path, write(tmp_path, "dump.kdump", kw.build(spec))) as kd:
        assert_plain_info(kd, spec)
        assert_dump(kd, spec)


# -- big-endian and 64 KiB pages ----------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 6])
@pytest.mark.parametrize("abi", ["ppc64", "s390x"])
def test_big_endian(tmp_path: Path, abi: str, version: int) -> None:
    """Big-endian headers, sub-header, notes and descriptors (ppc64, s390x)."""
    spec = make_spec(abi=abi, version=version, max_mapnr=0x1000)
    image = kw.build(spec)
    assert image[8:12] == struct.pack(">I", version)
    with open_kdump(tmp_path, write(tmp_path, "dump.kdump", image)) as kd:
        assert_plain_info(kd, spec)
        assert kd.info.machine == abi
        assert_dump(kd, spec)


@pytest.mark.parametrize("abi", ["i386", "arm", "ppc64", "s390x"])
def test_other_machines_read_physical_memory_only(tmp_path: Path, abi: str) -> None:
    """SPEC 11: a machine with no translator opens and reads physical memory; a virtual read
    is the hard error naming the machine, also through the C-style call."""
    spec = make_spec(abi=abi, version=6, max_mapnr=0x1000)
    core = write(tmp_path, "dump.kdump", kw.build(spec))
    with open_kdump(tmp_path, core) as kd:
        assert kd.info.machine == abi
        assert kd.info.pgtable_levels is None
        assert kd.read_physical(2 * PAGE, 16) == spec.pages[2][:16]
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.read(0xC000_0000, 16)
        assert str(raised.value) == f"{core}: no address translation for {abi}"
        assert raised.value.hard is True
        assert raised.value.reason is None
        buf = bytearray(16)
        assert kvm_rs.read(kd, 0xC000_0000, buf) == -1
        assert kvm_rs.geterr(kd) == f"{core}: no address translation for {abi}"


AARCH64_64K = {
    "NUMBER(VA_BITS)": "48",
    "NUMBER(kimage_voffset)": "0xffff7fffc0000000",
    "NUMBER(PHYS_OFFSET)": "0x40000000",
}


@pytest.mark.parametrize("abi", ["ppc64", "aarch64"])
def test_64k_pages(tmp_path: Path, abi: str) -> None:
    """64 KiB pages (block_size = PAGESIZE = 65536): ppc64 and arm64 kernels use them."""
    extra = {"PAGESIZE": "65536", **(AARCH64_64K if abi == "aarch64" else {})}
    spec = make_spec(
        abi=abi, block_size=1 << 16, max_mapnr=64, vmcoreinfo=synthetic_vmcoreinfo(extra)
    )
    with open_kdump(tmp_path, write(tmp_path, "dump.kdump", kw.build(spec))) as kd:
        assert_plain_info(kd, spec)
        assert kd.info.page_size == 1 << 16
        assert kd.info.machine == abi
        assert_dump(kd, spec)


# -- flattened ---------------------------------------------------------------------------------

FLATTEN_CASES = {
    "in-order": {"chunk": 4096, "reorder": False},
    "reordered": {"chunk": 4096, "reorder": True},
    "fragmented": {"chunk": 1000, "reorder": True, "overlap": True},
}


@pytest.mark.parametrize("how", list(FLATTEN_CASES))
def test_flattened(tmp_path: Path, how: str) -> None:
    """makedumpfile -F: records in order, out of order, and in odd-sized fragments with
    overlapping records (the later one wins, as with `makedumpfile -R`)."""
    spec = make_spec(max_mapnr=256)
    stream = kw.flatten(kw.build(spec), **FLATTEN_CASES[how])
    with open_kdump(tmp_path, write(tmp_path, "dump.flat", stream)) as kd:
        assert_plain_info(kd, spec, fmt="flattened")
        assert_dump(kd, spec)


def test_flattened_holes_read_as_zeros(tmp_path: Path) -> None:
    """No record covers the all-zero stretches (the shared zero page among them): inside the
    file they are zeros, as in the file `makedumpfile -R` rebuilds."""
    spec = make_spec(max_mapnr=256)
    image, layout = kw.build_with_layout(spec)
    stream = kw.flatten(image, 512, reorder=True, skip_zeros=True)
    assert layout.zero_page is not None
    assert kw.unflatten(stream) == image
    inside = range(-(-layout.zero_page // 512) * 512, layout.zero_page + PAGE - 511, 512)
    assert len(inside) >= 6 and not set(inside) & set(flattened_offsets(stream))
    with open_kdump(tmp_path, write(tmp_path, "dump.flat", stream)) as kd:
        assert kd.info.truncated is False
        assert kd.read_physical(9 * PAGE, PAGE) == bytes(PAGE)
        assert_dump(kd, spec)


def flattened_offsets(stream: bytes) -> list[int]:
    """The file offsets of a flattened stream's records."""
    offsets = []
    pos = kw.MDF_HEADER_SIZE
    while True:
        at, size = struct.unpack_from(">qq", stream, pos)
        if at == -1:
            return offsets
        offsets.append(at)
        pos += 16 + size


# -- split dumps --------------------------------------------------------------------------------

SPLIT_MAPNR = 96
RANGES = kw.even_ranges(SPLIT_MAPNR, 3)  # (0, 32), (32, 64), (64, 96)


def split_spec(tag: int = 0, **kwargs: Any) -> KdumpSpec:
    """A dump with written and excluded pages in every part's range."""
    spec = make_spec(max_mapnr=SPLIT_MAPNR, tag=tag, **kwargs)
    pages = dict(spec.pages)
    for pfn in (31, 32, 33, 40, 63, 64, 70):
        pages[pfn] = page(pfn, spec.block_size, tag)
    return replace(spec, pages=pages, excluded=spec.excluded | {35, 71})


def write_parts(
    folder: Path, spec: KdumpSpec, ranges: Sequence[tuple[int, int]], flat: str = "none"
) -> list[Path]:
    """The parts as files; `flat`: "none", "all" (every part flattened) or "mixed". (makedumpfile
    refuses -F with --split, so flattened parts come from other tools; libkdumpfile reads
    them, alone and together.)"""
    paths = []
    for i, image in enumerate(kw.split_parts(spec, ranges)):
        if flat == "all" or (flat == "mixed" and i % 2 == 1):
            image = kw.flatten(image, 3000, reorder=True)
        paths.append(write(folder, f"{folder.name}-part{i + 1}", image))
    return paths


def in_range(pfns: Any, pfn_range: tuple[int, int]) -> list[int]:
    return sorted(p for p in pfns if pfn_range[0] <= p < pfn_range[1])


def out_of_range(pfns: Any, pfn_range: tuple[int, int]) -> list[int]:
    return sorted(p for p in pfns if not pfn_range[0] <= p < pfn_range[1])


@pytest.mark.parametrize("flat", ["none", "all"], ids=["plain", "flattened"])
@pytest.mark.parametrize("index", range(3), ids=[f"part{i + 1}" for i in range(3)])
def test_split_part_alone(tmp_path: Path, index: int, flat: str) -> None:
    """One part opens as a dump of its pfn range: its pages read; a page of another part is
    never looked up in this part's bitmaps."""
    spec = split_spec()
    part = write_parts(tmp_path, spec, RANGES, flat)[index]
    pfn_range = RANGES[index]
    with open_kdump(tmp_path, part) as kd:
        assert kd.info.format == ("flattened" if flat == "all" else "kdump")
        assert (kd.info.pfn_range, kd.info.parts) == (pfn_range, 1)
        assert (kd.info.incomplete, kd.info.truncated) == (False, False)
        assert_pages(kd, spec, in_range(spec.pages, pfn_range))
        for pfn in in_range(spec.excluded, pfn_range):
            assert_reason(kd, pfn * PAGE, 8, "excluded")
        for pfn in out_of_range(spec.pages, pfn_range) + out_of_range(spec.excluded, pfn_range):
            assert_reason(kd, pfn * PAGE + 16, 8, NOT_HERE)
        # A read that starts in this part and runs into the next one.
        end = pfn_range[1] * PAGE
        if pfn_range[1] < SPLIT_MAPNR and pfn_range[1] - 1 in spec.pages:
            assert_reason(kd, end - 8, 16, NOT_HERE, at=end)


ORDERS = {"forward": [0, 1, 2], "backward": [2, 1, 0], "shuffled": [1, 2, 0]}


@pytest.mark.parametrize("flat", ["none", "all", "mixed"])
@pytest.mark.parametrize("order", list(ORDERS))
def test_split_parts_together(tmp_path: Path, order: str, flat: str) -> None:
    """The parts together, in any order, plain, flattened or both: one dump again."""
    spec = split_spec()
    parts = write_parts(tmp_path, spec, RANGES, flat)
    with open_kdump(tmp_path, [parts[i] for i in ORDERS[order]]) as kd:
        assert kd.info.format == ("flattened" if flat == "all" else "kdump")
        assert (kd.info.pfn_range, kd.info.parts) == (None, 3)
        assert kd.info.osrelease == TEST_RELEASE
        assert_dump(kd, spec)
        # Reads across the parts' boundaries.
        assert kd.read_physical(33 * PAGE - 4, 8) == spec.pages[32][-4:] + spec.pages[33][:4]
        assert kd.read_physical(64 * PAGE - 4, 8) == spec.pages[63][-4:] + spec.pages[64][:4]


SPLIT_VERSIONS = [("x86_64", 2), ("x86_64", 5), ("i386", 5), ("i386", 6), ("arm", 6)]


@pytest.mark.parametrize(
    ("abi", "version"), SPLIT_VERSIONS, ids=[f"{a}-v{v}" for a, v in SPLIT_VERSIONS]
)
def test_split_versions(tmp_path: Path, abi: str, version: int) -> None:
    """start_pfn/end_pfn (`unsigned long`, versions 2-5) and start_pfn_64/end_pfn_64 (6), on
    64-bit and both 32-bit layouts."""
    machine = MACHINES.get(abi)
    spec = split_spec(abi=abi, version=version, machine=machine)
    parts = write_parts(tmp_path, spec, RANGES)
    extra = given_vmcoreinfo(spec)
    with open_kdump(tmp_path, parts[1], **extra) as kd:
        assert kd.info.pfn_range == RANGES[1]
        assert_pages(kd, spec, in_range(spec.pages, RANGES[1]))
        assert_reason(kd, 0, 8, NOT_HERE)
    with open_kdump(tmp_path, parts[::-1], **extra) as kd:
        assert kd.info.parts == 3
        assert_dump(kd, spec)


def test_split_gap(tmp_path: Path) -> None:
    """Parts 1 and 3 without part 2: a gap is allowed; its pages are not in the dump."""
    spec = split_spec()
    parts = write_parts(tmp_path, spec, RANGES)
    with open_kdump(tmp_path, [parts[2], parts[0]]) as kd:
        assert kd.info.parts == 2
        assert_pages(kd, spec, in_range(spec.pages, RANGES[0]) + in_range(spec.pages, RANGES[2]))
        for pfn in in_range(spec.pages, RANGES[1]):
            assert_reason(kd, pfn * PAGE, 8, "not in the dump")


def other_dump_part(folder: Path, field: str) -> Path:
    """Part 2 of another dump of the same kernel: its VMCOREINFO, or its header, differs."""
    if field == "vmcoreinfo":
        spec = split_spec(tag=1, vmcoreinfo=synthetic_vmcoreinfo({"CRASHTIME": "1700000002"}))
    else:
        spec = split_spec(tag=1, timestamp=(1700000002, 0))
    (folder / "other").mkdir()
    return write_parts(folder / "other", spec, RANGES)[1]


@pytest.mark.parametrize("field", ["vmcoreinfo", "header"])
def test_split_part_of_another_dump(tmp_path: Path, field: str) -> None:
    stamp = {"vmcoreinfo": synthetic_vmcoreinfo({"CRASHTIME": "1700000001"})}
    if field == "header":
        stamp = {"timestamp": (1700000001, 0)}
    parts = write_parts(tmp_path, split_spec(**stamp), RANGES)
    stranger = other_dump_part(tmp_path, field)
    expected = f"{stranger}: not part of the same dump as {parts[0]} ({field})"
    with pytest.raises(kvm_rs.KvmError) as raised:
        open_kdump(tmp_path, [parts[0], stranger, parts[2]])
    assert str(raised.value) == expected
    errbuf = bytearray(kvm_rs._POSIX2_LINE_MAX)
    core = [str(parts[0]), str(stranger), str(parts[2])]
    assert kvm_rs.openfiles(str(system_map(tmp_path)), core, None, 0, errbuf) is None
    assert bytes(errbuf[: errbuf.index(0)]) == expected.encode()


@pytest.mark.parametrize(
    "ranges", [[(0, 48), (32, 96)], [(0, 48), (0, 48)]], ids=["overlapping", "same-range"]
)
def test_split_overlapping_ranges(tmp_path: Path, ranges: list[tuple[int, int]]) -> None:
    spec = split_spec()
    parts = write_parts(tmp_path, spec, ranges)
    with pytest.raises(kvm_rs.KvmError) as raised:
        open_kdump(tmp_path, parts)
    assert str(raised.value) == f"{parts[1]}: not part of the same dump as {parts[0]} (pfn range)"


# -- incomplete and cut short -----------------------------------------------------------------


@pytest.mark.parametrize("flat", [False, True], ids=["plain", "flattened"])
def test_incomplete(tmp_path: Path, flat: bool) -> None:
    """makedumpfile ran out of space: status bit 0x8, the last descriptors zero. The file
    holds all it claims, so it is incomplete but not truncated."""
    spec = make_spec(incomplete_tail=2)
    image, layout = kw.build_with_layout(spec)
    lost = sorted(spec.pages)[-2:]
    written = [d for pfn, d in layout.pages.items() if pfn not in lost]
    assert max(d.offset + d.size for d in written) == len(image)
    assert [layout.pages[p].offset for p in lost] == [0, 0]
    if flat:
        image = kw.flatten(image, 4096, reorder=True)
    with open_kdump(tmp_path, write(tmp_path, "dump", image)) as kd:
        assert (kd.info.incomplete, kd.info.truncated) == (True, False)
        assert_pages(kd, spec, sorted(spec.pages)[:-2])
        for pfn in lost:
            assert_reason(kd, pfn * PAGE + 8, 8, "not in the dump (incomplete)")
        assert_reason(kd, 3 * PAGE, 8, "excluded")


def test_incomplete_flag_alone(tmp_path: Path) -> None:
    """The status bit with every descriptor written: incomplete, and every page reads."""
    spec = make_spec(incomplete=True)
    with open_kdump(tmp_path, write(tmp_path, "dump.kdump", kw.build(spec))) as kd:
        assert (kd.info.incomplete, kd.info.truncated) == (True, False)
        assert_dump(kd, spec)


def test_complete_dump_is_neither(tmp_path: Path) -> None:
    spec = make_spec()
    with open_kdump(tmp_path, write(tmp_path, "dump.kdump", kw.build(spec))) as kd:
        assert (kd.info.incomplete, kd.info.truncated) == (False, False)


def test_raw_page_cut_by_eof(tmp_path: Path) -> None:
    """A raw (uncompressed) page cut 100 bytes in: the bytes before EOF read; a read that
    runs past EOF is the hard `short read`, carrying the bytes before EOF."""
    spec = make_spec(compress=None, zero_page=False)
    image, layout = kw.build_with_layout(spec)
    last = max(spec.pages)
    data = layout.pages[last]
    assert (data.size, data.offset + data.size) == (PAGE, len(image))
    core = write(tmp_path, "cut.kdump", kw.cut(image, data.offset + 100))
    with open_kdump(tmp_path, core) as kd:
        assert (kd.info.truncated, kd.info.incomplete) == (True, False)
        assert_pages(kd, spec, sorted(spec.pages)[:-1])
        assert kd.read_physical(last * PAGE, 64) == spec.pages[last][:64]
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.read_physical(last * PAGE + 40, 200)
        assert str(raised.value) == "short read"
        assert raised.value.hard is True
        assert raised.value.partial == spec.pages[last][40:100]


def test_compressed_page_cut_by_eof(tmp_path: Path) -> None:
    """A zlib page cut in half cannot be decompressed: `short read`; earlier pages read."""
    spec = make_spec()
    image, layout = kw.build_with_layout(spec)
    last = max(spec.pages)
    data = layout.pages[last]
    assert data.flags == kw.DUMP_DH_COMPRESSED_ZLIB
    core = write(tmp_path, "cut.kdump", kw.cut(image, data.offset + data.size // 2))
    with open_kdump(tmp_path, core) as kd:
        assert kd.info.truncated is True
        assert_pages(kd, spec, sorted(spec.pages)[:-1])
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.read_physical(last * PAGE, 8)
        assert str(raised.value) == "short read"
        assert raised.value.hard is True


# -- pre-4.13 x86_64: init_level4_pgt -----------------------------------------------------------

DIRECT_MAP = 0xFFFF_8800_0000_0000  # PAGE_OFFSET before 4.20's 0xffff888000000000
PGT_VA = 0xFFFF_FFFF_81A0_A000  # SYMBOL(init_level4_pgt)
PHYS_BASE = 0x20_0000
TABLE = 0x63  # present, writable, accessed, dirty
LARGE = 0xE3  # ... and PSE
NX = 1 << 63


def pgt_spec(with_number: bool) -> tuple[KdumpSpec, dict[str, int]]:
    """A 4-level page table under init_level4_pgt, at its image address's physical page
    (va - __START_KERNEL_map + phys_base); phys_base in the sub-header and, with_number,
    as NUMBER(phys_base) too (kernels 4.10-4.12; 3.x kernels have only the header's)."""
    root = (PGT_VA - 0xFFFF_FFFF_8000_0000 + PHYS_BASE) >> 12
    pdpt, pd, pt, pd_large, pd_missing = root + 1, root + 2, root + 3, root + 4, root + 5
    tables: dict[int, bytearray] = {pfn: bytearray(PAGE) for pfn in (root, pdpt, pd, pt, pd_large)}

    def entry(pfn: int, index: int, value: int) -> None:
        struct.pack_into("<Q", tables[pfn], index * 8, value)

    va = {
        "small": DIRECT_MAP + 0x123000,
        "unmapped": DIRECT_MAP + 0x124000,
        "large": DIRECT_MAP + 0x4000_0000 + 0x5010,
        "no-table": DIRECT_MAP + 0x8000_0000,
    }
    entry(root, (DIRECT_MAP >> 39) & 0x1FF, (pdpt << 12) | TABLE)
    entry(pdpt, 0, (pd << 12) | TABLE)
    entry(pdpt, 1, (pd_large << 12) | TABLE)
    entry(pdpt, 2, (pd_missing << 12) | TABLE)
    entry(pd, 0, (pt << 12) | TABLE)
    entry(pt, 0x123, (0x345 << 12) | TABLE | NX)
    entry(pd_large, 0, 0x60_0000 | LARGE | NX)
    pages = {pfn: bytes(data) for pfn, data in tables.items()}
    pages[0x345] = page(0x345)
    pages[0x605] = page(0x605)
    extra = {
        "SYMBOL(init_level4_pgt)": f"{PGT_VA:x}",
        "NUMBER(phys_base)": str(PHYS_BASE) if with_number else None,
    }
    spec = KdumpSpec(
        max_mapnr=0x2000,
        pages=pages,
        excluded=frozenset({pd_missing}),
        vmcoreinfo=synthetic_vmcoreinfo(extra),
        compress="zlib",
        phys_base=PHYS_BASE,
        release=TEST_RELEASE,
    )
    return spec, va


@pytest.mark.parametrize("with_number", [True, False], ids=["number-phys_base", "header-only"])
def test_init_level4_pgt(tmp_path: Path, with_number: bool) -> None:
    """Kernels before 4.13 name the top table init_level4_pgt: the walk starts there (4 KiB
    and 2 MiB pages), phys_base from VMCOREINFO or else the kdump sub-header."""
    spec, va = pgt_spec(with_number)
    with open_kdump(tmp_path, write(tmp_path, "dump.kdump", kw.build(spec))) as kd:
        assert kd.info.pgtable_levels == 4
        assert kd.read(va["small"], 64) == spec.pages[0x345][:64]
        assert kd.read(va["small"] + 0xFF0, 16) == spec.pages[0x345][0xFF0:]
        assert kd.read(va["large"], 32) == spec.pages[0x605][0x10:0x30]
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.read(va["unmapped"], 8)
        assert (str(raised.value), raised.value.address) == (
            f"invalid address ({va['unmapped']:#x})",
            va["unmapped"],
        )
        assert raised.value.reason == "not mapped"
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.read(va["no-table"], 8)
        assert raised.value.reason == "page table missing"
        assert raised.value.address == va["no-table"]
        buf = bytearray(16)
        assert kvm_rs.read(kd, va["small"], buf) == 16
        assert bytes(buf) == spec.pages[0x345][:16]
