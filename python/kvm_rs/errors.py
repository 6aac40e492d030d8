"""KvmError, the exception of the Pythonic layer.

`KvmError` is an OSError. Where a system call failed, the instance is also of the built-in
class for that errno (FileNotFoundError, PermissionError, ...), with `.errno`, `.strerror`
and `.filename` set, so `except FileNotFoundError` works on a missing dump. `str(error)` is
the libkvm message, exactly as `geterr` reports it.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["KvmError"]


class KvmError(OSError):
    """A libkvm error: `message` (the text), `hard` (not a soft error such as an invalid
    address), `address` (for a failed read: the first byte it could not deliver), `reason`
    (why: "not mapped", "excluded", "not in the dump", "not in the dump (incomplete)",
    "not in this part of a split dump", "page table missing", "truncated"), `partial` (for a
    read that stopped part way, as at the end of a truncated dump: the bytes read before it
    stopped), plus OSError's errno and filename."""

    message: str
    hard: bool
    address: int | None
    reason: str | None
    partial: bytes | None = None

    def __init__(
        self,
        message: str,
        errno: int | None = None,
        filename: str | None = None,
        *,
        hard: bool = True,
        address: int | None = None,
        reason: str | None = None,
    ) -> None:
        if errno is None:
            super().__init__(message)
        else:
            super().__init__(errno, os.strerror(errno), filename)
        self.filename = filename
        self.message = message
        self.hard = hard
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (self.message, self.errno, self.filename, self.hard, self.address, self.reason),
        )


_BY_OSERROR_CLASS: dict[type[OSError], type[KvmError]] = {}


def _class_for(errno: int | None) -> type[KvmError]:
    if errno is None:
        return KvmError
    builtin = type(OSError(errno, ""))
    if builtin is OSError:
        return KvmError
    cls = _BY_OSERROR_CLASS.get(builtin)
    if cls is None:
        cls = type(f"Kvm{builtin.__name__}", (KvmError, builtin), {"__module__": __name__})
        _BY_OSERROR_CLASS[builtin] = cls
    return cls


def _rebuild(
    message: str,
    errno: int | None,
    filename: str | None,
    hard: bool,
    address: int | None,
    reason: str | None = None,
) -> KvmError:
    return _class_for(errno)(message, errno, filename, hard=hard, address=address, reason=reason)


def _from_native(
    message: bytes,
    hard: bool,
    errno: int | None,
    filename: bytes | None,
    address: int | None,
    reason: str | None,
) -> KvmError:
    """Called by the native module to build every exception it raises. Names arrive as
    bytes and are decoded as the OS does (os.fsdecode), so they encode back unchanged."""
    name = None if filename is None else os.fsdecode(filename)
    return _class_for(errno)(
        os.fsdecode(message), errno, name, hard=hard, address=address, reason=reason
    )
