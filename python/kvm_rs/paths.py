"""Default paths (SPEC §1). Read at call time, so tests and callers may reassign them."""

from __future__ import annotations

import os

__all__ = ["_PATH_DEVMEM", "_PATH_KSYMS", "_PATH_MEM", "_PATH_UNIX"]


def _unix_candidates(release: str) -> list[str]:
    """Where distributions put the running kernel's vmlinux or System.map, best first."""
    return [
        f"/usr/lib/debug/boot/vmlinux-{release}",
        f"/usr/lib/debug/lib/modules/{release}/vmlinux",
        f"/boot/vmlinux-{release}",
        f"/usr/lib/debug/boot/System.map-{release}",
        f"/boot/System.map-{release}",
    ]


def _first_existing(candidates: list[str]) -> str:
    return next((path for path in candidates if os.path.exists(path)), candidates[0])


_PATH_KSYMS = "/proc/kallsyms"
_PATH_UNIX = _first_existing(_unix_candidates(os.uname().release))
_PATH_MEM = "/proc/kcore"
_PATH_DEVMEM = "/dev/mem"
