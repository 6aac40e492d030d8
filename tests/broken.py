"""Deliberately broken dumps for the scan tests (API and CLI), with the exact message each
must get: an empty file, a text file, a kdump cut inside its header, and a kdump whose
bitmap_blocks is absurd; two of them one folder down (folders are walked recursively)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

#: disk_dump_header.bitmap_blocks, uint32 LE in the 64-bit layout.
BITMAP_BLOCKS_OFFSET = 436


def make_broken(folder: Path, kdump: Path) -> dict[str, str]:
    """Writes the broken files into `folder`; returns path → expected message."""
    deeper = folder / "deeper"
    deeper.mkdir(parents=True)
    empty = folder / "empty.vmcore"
    empty.write_bytes(b"")
    text = folder / "notes.txt"
    text.write_text("this is a text file\n")
    with kdump.open("rb") as src:
        head = src.read(300)
    truncated = deeper / "truncated-header.kdump"
    truncated.write_bytes(head)
    bad_bitmap = deeper / "bitmap-blocks.kdump"
    shutil.copyfile(kdump, bad_bitmap)
    with bad_bitmap.open("r+b") as dst:
        dst.seek(BITMAP_BLOCKS_OFFSET)
        dst.write(struct.pack("<I", 0xFFFFFFFF))
    return {
        str(empty): f"{empty}: empty file",
        str(text): f"{text}: not a kernel core file",
        str(truncated): f"{truncated}: truncated core: disk_dump_header",
        str(bad_bitmap): (
            f"{bad_bitmap}: invalid core: bitmap of 4294967295 blocks does not fit max_mapnr 65536"
        ),
    }
