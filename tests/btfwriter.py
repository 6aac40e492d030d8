"""A small BTF writer (include/uapi/linux/btf.h) for synthetic kernels: ints, pointers,
arrays and structs, enough for a task_struct-shaped layout."""

from __future__ import annotations

import struct
from collections.abc import Sequence

MAGIC = 0xEB9F
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT = 1, 2, 3, 4


class Btf:
    def __init__(self, little_endian: bool = True) -> None:
        self.endian = "<" if little_endian else ">"
        self.types = b""
        self.strings = b"\0"
        self.count = 0

    def _name(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def _record(self, name: str, kind: int, vlen: int, size: int, extra: Sequence[int]) -> int:
        words = [self._name(name), vlen | kind << 24, size, *extra]
        self.types += struct.pack(f"{self.endian}{len(words)}I", *words)
        self.count += 1
        return self.count

    def int(self, name: str, size: int, signed: bool = False) -> int:
        return self._record(name, KIND_INT, 0, size, [int(signed) << 24 | size * 8])

    def ptr(self, to: int) -> int:
        return self._record("", KIND_PTR, 0, to, [])

    def array(self, elem: int, index: int, count: int) -> int:
        return self._record("", KIND_ARRAY, 0, 0, [elem, index, count])

    def struct(self, name: str, size: int, members: Sequence[tuple[str, int, int]]) -> int:
        """`members`: (name, type id, byte offset)."""
        extra: list[int] = []
        for member, type_id, offset in members:
            extra += [self._name(member), type_id, offset * 8]
        return self._record(name, KIND_STRUCT, len(members), size, extra)

    def forward(self) -> int:
        """The id the next record will get (for self-referring types)."""
        return self.count + 1

    def blob(self) -> bytes:
        header = struct.pack(
            f"{self.endian}HBBIIIII",
            MAGIC,
            1,
            0,
            24,
            0,
            len(self.types),
            len(self.types),
            len(self.strings),
        )
        return header + self.types + self.strings
