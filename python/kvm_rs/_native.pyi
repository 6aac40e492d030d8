"""The native module. Hand-written; checked against the binary by mypy.stubtest."""

from typing import Any, final

from .errors import KvmError

__all__ = [
    "KVM_NO_FILES",
    "PATH_MAX",
    "Handle",
    "ScanStream",
    "build_cache_stats",
    "clear_build_cache",
    "clear_exec_cache",
    "exec_cache_stats",
    "loadavg",
    "modules",
    "open_session",
    "scan_stream",
    "stack",
    "system",
    "tasks",
]

KVM_NO_FILES: int
PATH_MAX: int

@final
class Handle:
    def close(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def no_files(self) -> bool: ...
    def nlist(self, names: list[bytes]) -> list[tuple[int, int] | None]: ...
    def read(self, addr: int, size: int) -> tuple[bytes, KvmError | None]: ...
    def read_bytes(self, addr: int, size: int) -> bytes: ...
    @property
    def errtext(self) -> str: ...
    def set_errtext(self, text: str) -> None: ...
    def read_physical(self, addr: int, size: int) -> tuple[bytes, KvmError | None]: ...
    def write(self, addr: int, data: bytes) -> int: ...
    def log(self) -> list[tuple[int, int, int, str | None, str]]: ...
    def info(self) -> dict[str, Any] | None: ...

@final
class ScanStream:
    def __iter__(self) -> ScanStream: ...
    def __next__(self) -> dict[str, Any]: ...
    def close(self) -> None: ...

def open_session(
    execfile: bytes | None,
    corefiles: list[bytes],
    swapfile: bytes | None,
    flags: int,
    defaults: dict[str, bytes],
    core_symbols: bool = False,
    vmcoreinfo: bytes | None = None,
) -> Handle: ...
def scan_stream(
    paths: list[bytes],
    execfile: bytes | None,
    threads: int,
    defaults: dict[str, bytes],
    vmcoreinfo: bytes | None = None,
    triage: bool = False,
) -> ScanStream: ...
def stack(
    handle: Handle, pid: int | None = None, cpu: int | None = None
) -> list[tuple[int, str | None, int | None, str | None, bool]]: ...
def clear_build_cache() -> None: ...
def build_cache_stats() -> tuple[int, int]: ...
def clear_exec_cache() -> None: ...
def exec_cache_stats() -> tuple[int, int]: ...
def tasks(
    handle: Handle,
) -> tuple[
    list[tuple[int, int, int | None, str, str, int | None, int | None, int | None, bool, int]],
    bool,
    list[str],
]: ...
def modules(
    handle: Handle,
) -> tuple[list[tuple[str, int, int, int, str | None, int]], bool, list[str]]: ...
def loadavg(handle: Handle) -> list[str]: ...
def system(handle: Handle) -> dict[str, Any]: ...
