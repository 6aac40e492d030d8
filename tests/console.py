"""The guests' serial console logs, as the dmesg tests compare them with the dump's kernel log."""

from __future__ import annotations

import re
from pathlib import Path

#: A kernel line as the console prints it: "[    1.234567] text".
KERNEL_LINE = re.compile(r"\[ *\d+\.\d{6}\] ")


def console_lines(path: Path, strip: bool = True) -> list[str]:
    """The log's lines (it is CRLF), trailing whitespace stripped unless `strip` is False."""
    text = path.read_bytes().decode("utf-8", "replace")
    lines = text.replace("\r\n", "\n").split("\n")
    return [line.rstrip() for line in lines] if strip else lines


def kernel_lines(path: Path, at_least: int, strip: bool = True) -> list[str]:
    """Only the kernel's lines (the log also holds the init script's); at least `at_least`."""
    lines = [line for line in console_lines(path, strip) if KERNEL_LINE.match(line)]
    assert len(lines) > at_least, f"{path}: too few kernel lines"
    return lines


def assert_ordered_subsequence(expected: list[str], got: list[str]) -> None:
    """Every expected line occurs in `got`, exactly, in order (other lines may come between)."""
    at = 0
    for index, line in enumerate(expected):
        try:
            at = got.index(line, at) + 1
        except ValueError:
            why = "out of order" if line in got else "missing"
            raise AssertionError(
                f"console line {index} of {len(expected)} {why}: {line!r}"
            ) from None
