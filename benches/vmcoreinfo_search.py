#!/usr/bin/env python3
"""The cost of finding VMCOREINFO in memory (SPEC 13), beside the peers on the same files.

    python3 benches/vmcoreinfo_search.py [--quick] [--runs N] [--out FILE] [--no-peers]

A QEMU guest dumped without `-device vmcoreinfo` (and some ELF tools) writes no VMCOREINFO
note. kvm_rs then searches the dump's physical pages for the kernel's own copy (a page that
starts with `OSRELEASE=`), 16 bytes a page, once at open. This measures open + close with
the exec file cached (as in a pipeline) of each ELF dump of the corpus and the fleet, as
written and as a copy whose VMCOREINFO note is renamed (so it is no longer one), and the
peers' open of the same copy: drgn (`set_core_dump`, then a read of linux_banner, which
needs the kernel's layout) and libkdumpfile (`kdumpfile(path)` + a read of linux_banner
through `addrxlat.ostype = linux`). The copies go to a temporary folder and are removed.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common as c
import kvm_rs

NOTE_NAME = b"VMCOREINFO\0"
RENAMED = b"XMCOREINFO\0"


def fleet_dir() -> Path | None:
    folder = Path(os.environ.get("KVM_RS_FLEET_DIR", Path.home() / ".cache" / "kvm-rs-fleet"))
    return folder if (folder / "truth.json").is_file() else None


def note_offset(path: Path) -> int:
    """The file offset of the VMCOREINFO note's name (ELF64 LE cores)."""
    with path.open("rb") as file:
        ehdr = file.read(64)
        phoff, phentsize, phnum = (
            struct.unpack_from("<Q", ehdr, 32)[0],
            *struct.unpack_from("<HH", ehdr, 54),
        )
        file.seek(phoff)
        table = file.read(phentsize * phnum)
        for index in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
                "<IIQQQQ", table, index * phentsize
            )
            if p_type != 4:
                continue
            file.seek(p_offset)
            notes = file.read(p_filesz)
            at = notes.find(NOTE_NAME)
            if at >= 0:
                return p_offset + at
    raise ValueError(f"{path}: no VMCOREINFO note")


def noteless_copy(path: Path, folder: Path) -> Path:
    copy = folder / f"noteless-{path.name}"
    with path.open("rb") as src, copy.open("wb") as dst:
        while chunk := src.read(16 << 20):
            dst.write(chunk)
    with copy.open("r+b") as file:
        file.seek(note_offset(path))
        file.write(RENAMED)
    return copy


def kvm_open(execfile: Path, corefile: Path) -> Callable[[Any], object]:
    def run(_: Any) -> None:
        kvm_rs.Kvm(execfile, corefile).close()

    return run


def peer_open_and_read(peer: c.Peer, corefile: Path, banner: int) -> Callable[[Any], object]:
    module = peer.module
    if peer.name == "drgn":

        def run(_: Any) -> None:
            prog = module.Program()  # type: ignore[union-attr]
            prog.set_core_dump(str(corefile))
            prog.read(banner, 16)

        return run

    def run_kdumpfile(_: Any) -> None:
        ctx = module.kdumpfile(str(corefile))  # type: ignore[union-attr]
        ctx.attr["addrxlat.ostype"] = "linux"
        ctx.read(module.KDUMP_KVADDR, banner, 16)  # type: ignore[union-attr]

    return run_kdumpfile


def main() -> int:
    args = c.arg_parser(__doc__ or "").parse_args()
    runs = args.runs or (5 if args.quick else 30)
    out = c.Output()
    peers = [] if args.no_peers else [c.load_drgn(), c.load_kdumpfile()]
    c.emit_header("VMCOREINFO found in memory: the cost at open", out, peers, [])
    cases: list[tuple[str, Path, Path, int]] = []
    corpus = c.corpus_dir()
    truth = c.load_truth(corpus)
    for name, dump in truth["dumps"].items():
        if dump["format"] == "elf":
            banner = int(dump["symbols"]["linux_banner"]["runtime_address"], 16)
            cases.append((name, corpus / dump["file"], corpus / c.EXEC_FILES[0], banner))
    fleet = fleet_dir()
    if fleet is not None:
        fleet_truth = c.load_truth(fleet)
        for name, dump in fleet_truth["dumps"].items():
            if name.endswith(".vmcore") and "qemu-kdump" not in name:
                banner = int(dump["symbols"]["linux_banner"]["runtime_address"], 16)
                cases.append((name, fleet / name, fleet / dump["exec_files"][0], banner))
    rows = []
    with tempfile.TemporaryDirectory(prefix="kvm-rs-bench-") as tmp:
        for name, dump, execfile, banner in cases:
            copy = noteless_copy(dump, Path(tmp))
            with kvm_rs.Kvm(execfile, copy) as kd:
                assert kd.info.vmcoreinfo_source == "memory", name
                assert kd.read(banner, 13) == b"Linux version", name
            kvm_rs.Kvm(execfile, dump).close()  # the exec file into the cache
            note = c.measure(kvm_open(execfile, dump), runs)
            memory = c.measure(kvm_open(execfile, copy), runs)
            row = [
                c.short_name(name),
                f"{dump.stat().st_size / 2**20:.0f} MiB",
                note.fmt(),
                memory.fmt(),
                f"{memory.median / note.median:.1f}x",
            ]
            for peer in peers:
                if peer.module is None:
                    row.append("not installed")
                    continue
                try:
                    row.append(c.measure(peer_open_and_read(peer, copy, banner), runs).fmt())
                except Exception as error:  # a peer that cannot read the file is reported
                    row.append(f"FAIL: {c.short_error(error, 80)}")
            rows.append(row)
            copy.unlink()
    headers = ["dump", "size", "kvm_rs, note", "kvm_rs, found in memory", "memory / note"]
    headers += [f"{p.name} (noteless: open + read)" for p in peers]
    c.print_table(headers, rows, out)
    out.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
