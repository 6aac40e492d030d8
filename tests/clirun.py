"""Shared by the tests that run the real `kvm-rs` console script, and those that read facts
out of truth.json."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def kvm_rs_command() -> list[str]:
    """The installed console script; `python -m kvm_rs` where it is not on PATH."""
    script = shutil.which("kvm-rs")
    return [script] if script else [sys.executable, "-m", "kvm_rs"]


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*kvm_rs_command(), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def expected_compression(truth: dict[str, Any]) -> str | None:
    """Compression named by truth.json's format_detail (None for an ELF core)."""
    if truth["format"] == "elf":
        return None
    detail = truth["format_detail"]
    for codec in ("snappy", "lzo", "zstd", "zlib"):
        if codec in detail:
            return codec
    raise AssertionError(f"no compression in {detail!r}")
