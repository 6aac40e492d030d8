"""The crash signature of SPEC §14: a stable hash of the crashing task's backtrace.

SHA-1 (hex) of the newline-joined function names of the first 6 frames after dropping the
panic machinery (`panic`, `die`, `oops_end`, `crash_kexec`, `__crash_kexec`,
`machine_kexec`, `dump_stack*`, `show_regs`, and every frame above, i.e. innermost of, the
outermost of them), each name without its compiler suffixes (`.isra.N`, `.constprop.N`,
`.part.N`, `.cold`). As ABRT's kernel duphash, the model, frames the unwinder only guessed
(not reliable: a stack scan's `?` entries) are left out, and a frame with no name counts as
`?`. Names only: no addresses, offsets or modules, so KASLR and the dump format change
nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Protocol

#: How many frames the signature hashes.
SIGNATURE_FRAMES = 6
#: The panic machinery, by exact name; `dump_stack*` by prefix.
MACHINERY = frozenset(
    {"panic", "die", "oops_end", "crash_kexec", "__crash_kexec", "machine_kexec", "show_regs"}
)
MACHINERY_PREFIX = "dump_stack"
#: Compiler suffixes, repeated as GCC stacks them (`f.isra.0.cold`, `f.constprop.0.isra.0`).
_SUFFIX = re.compile(r"(?:\.(?:isra|constprop|part)\.\d+|\.cold(?:\.\d+)?)+$")


class _Frame(Protocol):
    @property
    def symbol(self) -> str | None: ...
    @property
    def reliable(self) -> bool: ...


def strip_suffixes(name: str) -> str:
    """`__handle_sysrq.cold` -> `__handle_sysrq`; `f.constprop.0.isra.1` -> `f`."""
    return _SUFFIX.sub("", name)


def is_machinery(name: str) -> bool:
    return name in MACHINERY or name.startswith(MACHINERY_PREFIX)


def signature_names(frames: Iterable[_Frame]) -> list[str]:
    """The (at most 6) names the signature hashes, innermost first."""
    names = [strip_suffixes(f.symbol or "?") for f in frames if f.reliable]
    last = max((i for i, name in enumerate(names) if is_machinery(name)), default=-1)
    return names[last + 1 :][:SIGNATURE_FRAMES]


def signature(frames: Iterable[_Frame]) -> str:
    """The SHA-1 (hex) of the newline-joined `signature_names`."""
    text = "\n".join(signature_names(frames))
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
