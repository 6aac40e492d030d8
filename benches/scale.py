#!/usr/bin/env python3
"""Big dumps, made here from the corpus's small ones: open, first read, scan and memory,
beside the dump each is made from (issue 11's scale rows).

    python3 benches/scale.py [--runs N] [--dir DIR]

- **1 TiB kdump**: the corpus's zlib kdump with `max_mapnr` raised to 2^28 pages of 4 KiB
  (1 TiB of physical address space): its two bitmaps grow to 32 MiB each (64 MiB, written
  sparse: the new bits are holes, read as zeros), the descriptors and pages move after
  them. The same pages at the same pfns, so every read and the scan's checks still work.
- **1,000,000 PT_LOADs**: the corpus's plain QEMU ELF with its memory split into one
  PT_LOAD per page, then PT_LOADs for pages above the end of RAM up to 1,000,000 in all
  (e_phnum is PN_XNUM, the count in section header 0, as makedumpfile writes it). The extra
  pages all point at one zero page at the end of the file: the file stays ~250 MiB.

Each measurement runs in a fresh child process (so its peak RSS is its own), `--runs` times
(median): open + close, open + the first read of linux_banner (its bytes checked against
truth.json), `kvm_rs.scan` of the file alone. The bounds: open stays bounded by the headers
(no pass over the bitmaps at open), the first read within 2x of the small dump's plus a
one-time index, and memory below 1 % of the dump's size. The files go to a temporary
folder (or --dir) and are removed unless --dir is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as c

PAGE = 4096
TIB_PAGES = 1 << 28
MILLION = 1_000_000
PT_LOAD, PT_NOTE = 1, 4
PN_XNUM = 0xFFFF

#: struct disk_dump_header (64-bit): offsets of the fields changed here.
HEADER_VERSION = 8
BLOCK_SIZE = 428
SUB_HDR_SIZE = 432
BITMAP_BLOCKS = 436
MAX_MAPNR = 440
#: struct kdump_sub_header (64-bit), from the start of block 1: max_mapnr_64 (version >= 6).
SUB_MAX_MAPNR_64 = 96
DESC = struct.Struct("<qIIQ")  # offset, size, flags, page_flags


def big_kdump(source: Path, target: Path) -> int:
    """The 1 TiB kdump; returns the size it describes (bytes)."""
    data = source.read_bytes()
    (version,) = struct.unpack_from("<I", data, HEADER_VERSION)
    block, sub_blocks, old_blocks = struct.unpack_from("<III", data, BLOCK_SIZE)
    bitmaps_at = block * (1 + sub_blocks)
    old_half = old_blocks * block // 2
    new_half = -(-TIB_PAGES // 8 // block) * block
    delta = 2 * (new_half - old_half)
    dumpable = data[bitmaps_at + old_half : bitmaps_at + 2 * old_half]
    count = sum(bin(byte).count("1") for byte in dumpable)
    descs_at = bitmaps_at + 2 * old_half
    head = bytearray(data[:bitmaps_at])
    struct.pack_into("<II", head, BITMAP_BLOCKS, 2 * new_half // block, TIB_PAGES)
    if version >= 6:
        struct.pack_into("<Q", head, block + SUB_MAX_MAPNR_64, TIB_PAGES)
    descs = bytearray(data[descs_at : descs_at + count * DESC.size])
    for index in range(count):
        offset, size, flags, page_flags = DESC.unpack_from(descs, index * DESC.size)
        if offset:
            DESC.pack_into(descs, index * DESC.size, offset + delta, size, flags, page_flags)
    body = data[descs_at + count * DESC.size :]
    with target.open("wb") as out:
        out.write(head)
        out.write(data[bitmaps_at : bitmaps_at + old_half])
        out.seek(bitmaps_at + new_half)
        out.write(dumpable)
        out.seek(bitmaps_at + 2 * new_half)
        out.write(descs)
        out.write(body)
    return TIB_PAGES * PAGE


def big_elf(source: Path, target: Path, loads: int = MILLION) -> int:
    """The ELF of `loads` one-page PT_LOADs; returns the memory it describes (bytes)."""
    data = source.read_bytes()
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    notes: list[tuple[int, int, int]] = []
    memory: list[tuple[int, int, int, int]] = []  # vaddr, paddr, offset, size
    for index in range(phnum):
        p_type, _, offset, vaddr, paddr, filesz, _memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + index * phentsize
        )
        if p_type == PT_NOTE:
            notes.append((offset, filesz, index))
        elif p_type == PT_LOAD and filesz:
            memory.append((vaddr, paddr, offset, filesz))
    pages = [
        (vaddr + at, paddr + at, offset + at)
        for vaddr, paddr, offset, size in memory
        for at in range(0, size - size % PAGE, PAGE)
    ]
    top = max(paddr for _, paddr, _ in pages) + PAGE
    total = len(notes) + loads
    ehsize, phsize, shsize = 64, 56, 64
    phdrs_at = ehsize + shsize  # section header 0 (for PN_XNUM) right after the ELF header
    notes_at = phdrs_at + total * phsize
    note_bytes = b"".join(data[off : off + size] for off, size, _ in notes)
    memory_at = -(-(notes_at + len(note_bytes)) // PAGE) * PAGE
    zero_at = memory_at + len(pages) * PAGE
    table = bytearray()
    at = notes_at
    for _, size, _ in notes:
        table += struct.pack("<IIQQQQQQ", PT_NOTE, 0, at, 0, 0, size, size, 0)
        at += size
    for index, (vaddr, paddr, _) in enumerate(pages[:loads]):
        offset = memory_at + index * PAGE
        table += struct.pack("<IIQQQQQQ", PT_LOAD, 7, offset, vaddr, paddr, PAGE, PAGE, 0)
    for extra in range(loads - len(pages)):
        paddr = top + extra * PAGE
        table += struct.pack("<IIQQQQQQ", PT_LOAD, 7, zero_at, 0, paddr, PAGE, PAGE, 0)
    header = bytearray(data[:ehsize])
    struct.pack_into("<QQ", header, 32, phdrs_at, ehsize)  # e_phoff, e_shoff
    struct.pack_into("<HHHHH", header, 54, phsize, PN_XNUM, shsize, 1, 0)
    section0 = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, total, 0, 0)
    with target.open("wb") as out:
        out.write(header)
        out.write(section0)
        out.write(table)
        out.write(note_bytes)
        out.seek(memory_at)
        for _, _, offset in pages[:loads]:
            out.write(data[offset : offset + PAGE])
        out.write(bytes(PAGE))
    return loads * PAGE


CHILD = """
import json, sys, time
import kvm_rs

def status(key):
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)

mode, path, addr, size = sys.argv[1], sys.argv[2], int(sys.argv[3], 0), int(sys.argv[4])
# The peak RSS from here on (a forked child starts with its parent's high-water mark).
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
before = status("VmRSS")
started = time.perf_counter()
result = {}
if mode == "scan":
    [report] = kvm_rs.scan([path], threads=1)
    result["ok"] = report.ok and report.readable
    result["error"] = report.error or report.reason
else:
    kd = kvm_rs.Kvm(execfile=kvm_rs.CORE_SYMBOLS, corefile=path)
    opened = time.perf_counter()
    if mode == "read":
        result["bytes"] = kd.read(addr, size).hex()
    kd.close()
    result["open"] = opened - started
result["seconds"] = time.perf_counter() - started
result["rss"] = status("VmHWM") - before
print(json.dumps(result))
"""


def child(mode: str, path: Path, addr: int, size: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), hex(addr), str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def measure(path: Path, dump: c.Dump, runs: int) -> dict[str, float]:
    banner = dump.banner
    expected = dump.expected["linux_banner"]
    opens, reads, scans, rss = [], [], [], []
    for _ in range(runs):
        opened = child("open", path, banner, len(expected))
        read = child("read", path, banner, len(expected))
        if bytes.fromhex(str(read["bytes"])) != expected:
            raise SystemExit(f"{path}: linux_banner read wrong")
        scan = child("scan", path, banner, len(expected))
        if not scan["ok"]:
            raise SystemExit(f"{path}: scan says {scan['error']}")
        opens.append(float(str(opened["open"])))
        reads.append(float(str(read["seconds"])))
        scans.append(float(str(scan["seconds"])))
        rss.append(max(float(str(r["rss"])) for r in (opened, read, scan)))
    return {
        "open": statistics.median(opens),
        "read": statistics.median(reads),
        "scan": statistics.median(scans),
        "rss": statistics.median(rss),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="keep the big files here")
    args = parser.parse_args()
    dumps = {d.name: d for d in c.load_dumps(c.corpus_dir())}
    kdump = dumps["boot-nokaslr.mdf-d31-zlib.kdump"]
    elf = dumps["boot-nokaslr.qemu-elf.vmcore"]
    with tempfile.TemporaryDirectory(prefix="kvm-rs-scale-") as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        cases = [
            ("1 TiB kdump", kdump, folder / "tib.kdump", big_kdump),
            ("1,000,000 PT_LOADs", elf, folder / "million.vmcore", big_elf),
        ]
        rows = []
        for label, small, target, make in cases:
            described = make(small.path, target)
            big = measure(target, small, args.runs)
            ref = measure(small.path, small, args.runs)
            own = big["rss"]
            rows.append(
                [
                    label,
                    f"{c.fmt_ns(big['open'] * 1e9)} ({big['open'] / ref['open']:.1f}x)",
                    f"{c.fmt_ns(big['read'] * 1e9)} ({big['read'] / ref['read']:.1f}x)",
                    f"{c.fmt_ns(big['scan'] * 1e9)} ({big['scan'] / ref['scan']:.1f}x)",
                    f"{own / 2**20:.1f} MiB ({own / described:.3%} of "
                    f"{described / 2**30:,.0f} GiB)",
                ]
            )
            rows.append(
                [
                    f"  its source, {small.name}",
                    c.fmt_ns(ref["open"] * 1e9),
                    c.fmt_ns(ref["read"] * 1e9),
                    c.fmt_ns(ref["scan"] * 1e9),
                    f"{ref['rss'] / 2**20:.1f} MiB",
                ]
            )
    headers = ["dump", "open", "open + first read", "scan", "peak RSS growth"]
    print(c.markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
