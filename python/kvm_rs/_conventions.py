"""The two ways libkvm reports errors, and nothing else.

Sun (`kvm_open`): given `errstr`, hard errors are printed to stderr as `errstr: message`,
during the open and for the handle's whole life; soft errors only go to the handle's text.
BSD (`kvm_openfiles`): nothing is printed; a failed open copies the message into the
caller's `errbuf` as bytes, NUL-terminated, truncated to `min(len(errbuf), 2048) - 1`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_POSIX2_LINE_MAX = 2048


def sun_report(errstr: str | None, message: str) -> None:
    """Prints a hard error the Sun way; with no errstr the error is not printed."""
    if errstr is not None:
        sys.stderr.write(f"{errstr}: {message}\n")


def bsd_fill_errbuf(errbuf: Any, message: str) -> None:
    """Copies a failed open's message into errbuf (a writable buffer), NUL-terminated."""
    if errbuf is None:
        return
    view = memoryview(errbuf).cast("B")
    room = min(len(view), _POSIX2_LINE_MAX) - 1
    if room < 0:
        return
    encoded = os.fsencode(message)[:room]
    view[: len(encoded)] = encoded
    view[len(encoded)] = 0


def check_errbuf(errbuf: Any) -> None:
    """errbuf must be a writable buffer; a wrong type is a programming error (TypeError)."""
    try:
        view = memoryview(errbuf)
    except TypeError:
        raise TypeError(
            f"errbuf must be a writable buffer (bytearray, memoryview, array), "
            f"not {type(errbuf).__name__}"
        ) from None
    if view.readonly:
        raise TypeError("errbuf must be a writable buffer, not a read-only one")
