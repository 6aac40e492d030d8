"""Shared helpers for the kvm_rs benchmark scripts (bench-only; never imported by kvm_rs).

Corpus location, truth.json loading, a perf_counter_ns timing helper, markdown tables, the
optional peers (drgn, libkdumpfile), the readers the open and read benchmarks time (kvm_rs
and the peers behind one interface) and a description of the machine and versions.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import kvm_rs

REPO = Path(__file__).resolve().parents[1]
UNPACK = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "unpack.py"

EXEC_FILES = ("System.map-6.1.0-56-amd64", "vmlinux-6.1.0-56-amd64.stripped")
EXEC_LABELS = {EXEC_FILES[0]: "System.map", EXEC_FILES[1]: "vmlinux"}

# Where Debian's python3-libkdumpfile puts its modules (built for /usr/bin/python3).
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


# -- corpus ---------------------------------------------------------------------------------


def corpus_dir() -> Path:
    """The unpacked corpus; runs shared/corpus/unpack.py when truth.json or a dump is missing."""
    env = os.environ.get("KVM_RS_CORPUS_DIR")
    folder = Path(env) if env else Path.home() / ".cache" / "kvm-rs-corpus"
    if not _corpus_complete(folder):
        if not UNPACK.exists():
            sys.exit(f"corpus missing at {folder} and no {UNPACK} to unpack it")
        print(f"unpacking the corpus into {folder} ...", file=sys.stderr)
        subprocess.run([sys.executable, str(UNPACK), str(folder)], check=True, stdout=sys.stderr)
        if not _corpus_complete(folder):
            sys.exit(f"corpus at {folder} is still incomplete after {UNPACK}")
    return folder


def _corpus_complete(folder: Path) -> bool:
    truth = folder / "truth.json"
    if not truth.exists():
        return False
    dumps = json.loads(truth.read_text())["dumps"]
    needed = [*dumps, *EXEC_FILES]
    return all((folder / name).exists() for name in needed)


@dataclass(frozen=True)
class Dump:
    """One corpus dump as truth.json describes it."""

    name: str
    path: Path
    format: str
    kaslr: bool
    symbols: dict[str, int]  # name -> runtime address
    expected: dict[str, bytes]  # name -> first 64 bytes at the runtime address

    @property
    def banner(self) -> int:
        return self.symbols["linux_banner"]


def load_truth(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "truth.json").read_text())
    return data


def load_dumps(folder: Path) -> list[Dump]:
    """Every dump truth.json lists, sorted by name, with its symbols' runtime addresses."""
    truth = load_truth(folder)
    dumps = []
    for name, entry in sorted(truth["dumps"].items()):
        symbols: dict[str, int] = {}
        expected: dict[str, bytes] = {}
        for sym, facts in entry["symbols"].items():
            if facts.get("runtime_address"):
                symbols[sym] = int(facts["runtime_address"], 16)
                if facts.get("bytes"):
                    expected[sym] = bytes.fromhex(facts["bytes"])
        dumps.append(
            Dump(
                name=name,
                path=folder / entry.get("file", name),
                format=entry.get("format", "?"),
                kaslr=bool(entry.get("kaslr")),
                symbols=symbols,
                expected=expected,
            )
        )
    return dumps


def short_name(dump_name: str) -> str:
    """`boot-nokaslr.mdf-d31-zlib.kdump` -> `nokaslr mdf-d31-zlib`."""
    boot, _, rest = dump_name.partition(".")
    rest = rest.rsplit(".", 1)[0] if rest.endswith((".kdump", ".vmcore")) else rest
    return f"{boot.removeprefix('boot-')} {rest}"


# -- timing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Summary of repeated timings, in nanoseconds."""

    median: float
    min: int
    max: int
    n: int

    @classmethod
    def of(cls, samples: Sequence[int]) -> Stats:
        if not samples:
            raise ValueError("no samples")
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    def fmt(self, spread: bool = True) -> str:
        text = fmt_ns(self.median)
        if spread:
            text += f" [{fmt_ns(self.min)} .. {fmt_ns(self.max)}]"
        return text


def measure(
    run: Callable[[Any], object],
    n: int,
    warmup: int = 2,
    setup: Callable[[], Any] | None = None,
    teardown: Callable[[Any], object] | None = None,
) -> Stats:
    """Times `run(state)` n times (after `warmup` untimed calls) with perf_counter_ns.

    `setup()` runs before each call, untimed, and its value is passed to `run`
    (None without setup); `teardown(state)` runs after, untimed. The garbage collector
    is off while timing, as in `timeit`.
    """
    samples: list[int] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(warmup + n):
            state = setup() if setup is not None else None
            t0 = time.perf_counter_ns()
            run(state)
            t1 = time.perf_counter_ns()
            if teardown is not None:
                teardown(state)
            if i >= warmup:
                samples.append(t1 - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return Stats.of(samples)


def fmt_ns(ns: float) -> str:
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} us"
    return f"{ns:.0f} ns"


def fmt_ratio(peer: float | None, ours: float | None) -> str:
    """peer / kvm_rs, e.g. `2.50x` (peer slower) or `0.40x` (peer faster)."""
    if peer is None or ours is None or ours <= 0:
        return "-"
    ratio = peer / ours
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


Cell = tuple[Stats | None, str | None]
"""A table cell's result: (timings, None) or (None, failure text)."""
MISSING: Cell = (None, None)


def cell_median(cell: Cell) -> float | None:
    return cell[0].median if cell[0] is not None else None


def show(cell: Cell, spread: bool = False, available: bool = True) -> str:
    """`n/a` (peer not installed), `FAIL`, or the median (with min .. max if `spread`)."""
    if not available:
        return "n/a"
    stats = cell[0]
    return "FAIL" if stats is None else stats.fmt(spread=spread)


class FreshNames:
    """New names for one file, so kvm_rs's per-process exec-file cache misses.

    kvm_rs keeps parsed exec files per process (rust/src/symbols/cache.rs: at most 8, keyed
    by device, inode, size, mtime, ctime *and* the path given), so only the first open of an
    exec file pays for parsing it. `next()` returns `/proc/self/fd/N` for one of `pool`
    descriptors of the file, round robin; with a pool larger than the cache, a name comes
    back only after its cache entry is gone. Nothing is written to disk.
    """

    def __init__(self, path: Path, pool: int = 16) -> None:
        self.fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for _ in range(pool)]
        self.turn = 0

    def next(self) -> str:
        fd = self.fds[self.turn % len(self.fds)]
        self.turn += 1
        return f"/proc/self/fd/{fd}"

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


# -- output ---------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; numeric-looking columns are right-aligned."""
    body = [[str(cell).replace("|", "\\|").replace("\n", " ") for cell in row] for row in rows]
    cols = len(headers)
    widths = [len(h) for h in headers]
    for row in body:
        if len(row) != cols:
            raise ValueError(f"row has {len(row)} cells, table has {cols} columns")
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]
    right = [i > 0 and all(_numeric(row[i]) for row in body) for i in range(cols)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else ("-" * (w + 2))
            for w, r in zip(widths, right, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(row) for row in body)])


def _numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell in ("-", "FAIL", "n/a"))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]], out: Output) -> None:
    out.emit(markdown_table(headers, rows))


class Output:
    """Prints to stdout and keeps the text, for `--out FILE`."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def emit(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self, path: str | None) -> None:
        if path:
            Path(path).write_text("\n".join(self.lines) + "\n")
            print(f"(written to {path})", file=sys.stderr)


def arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    parser.add_argument("--runs", type=int, default=None, help="timed repetitions per cell")
    parser.add_argument("--out", metavar="FILE", help="also write the markdown report here")
    parser.add_argument("--no-peers", action="store_true", help="kvm_rs only (skip drgn etc.)")
    return parser


# -- peers ----------------------------------------------------------------------------------


@dataclass
class Peer:
    name: str
    module: ModuleType | None
    version: str | None
    how: str  # how it was found, or why not


def load_drgn() -> Peer:
    try:
        drgn = importlib.import_module("drgn")
    except ImportError as error:
        return Peer("drgn", None, None, f"not installed ({error}); `pip install drgn`")
    return Peer("drgn", drgn, getattr(drgn, "__version__", None), "PyPI wheel")


def load_kdumpfile() -> Peer:
    """libkdumpfile's Python binding: importable directly (e.g. pip) or from Debian's
    python3-libkdumpfile, whose dist-packages folder is put on sys.path only for the
    import (the extension is built for the same CPython 3.x ABI)."""
    try:
        module = importlib.import_module("kdumpfile")
        return Peer("libkdumpfile", module, _dist_version("libkdumpfile"), "importable")
    except ImportError:
        pass
    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    folder = Path(DEBIAN_DIST_PACKAGES)
    if not folder.joinpath("kdumpfile").is_dir():
        return Peer(
            "libkdumpfile", None, None, "not installed (apt-get install python3-libkdumpfile)"
        )
    if not any(folder.glob(f"_kdumpfile.{tag}-*.so")):
        return Peer("libkdumpfile", None, None, f"{folder} has no {tag} build of _kdumpfile")
    sys.path.append(str(folder))
    try:
        module = importlib.import_module("kdumpfile")
        importlib.import_module("addrxlat")
    except ImportError as error:
        return Peer("libkdumpfile", None, None, f"Debian build failed to import: {error}")
    finally:
        sys.path.remove(str(folder))
    version = None
    for info in folder.glob("libkdumpfile-*.egg-info"):
        version = info.name.removeprefix("libkdumpfile-").split("-py")[0].removesuffix(".egg-info")
    return Peer("libkdumpfile", module, version, f"Debian python3-libkdumpfile via {folder}")


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def short_error(error: BaseException, limit: int = 300) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- readers --------------------------------------------------------------------------------

BLOCK = 4096
WORD = 8
SEED = 20261126

Setup = Callable[[], Any] | None


@dataclass
class Reader:
    """How one reader opens a dump and reads kernel virtual memory."""

    name: str
    open: Callable[[], Any]  # -> handle
    read: Callable[[Any, int, int], bytes]  # (handle, addr, size) -> bytes
    close: Callable[[Any], None]
    bind: Callable[[Any], Callable[[int, int], Any]]  # handle -> read(addr, size), for loops


def kvm_reader(label: str, execfile: Any, corefile: str) -> Reader:
    """`kvm_rs.Kvm(execfile, corefile)`, `.read(addr, size)`, `.close()`."""
    return Reader(
        name=f"kvm_rs {label}",
        open=lambda: kvm_rs.Kvm(execfile=execfile, corefile=corefile),
        read=lambda h, addr, size: h.read(addr, size),
        close=lambda h: h.close(),
        bind=lambda h: h.read,
    )


def drgn_reader(drgn: Any, corefile: str) -> Reader:
    """`prog = drgn.Program(); prog.set_core_dump(path)`, `prog.read(addr, size)`."""

    def open_() -> Any:
        prog = drgn.Program()
        prog.set_core_dump(corefile)
        return prog

    return Reader(
        name="drgn",
        open=open_,
        read=lambda prog, addr, size: prog.read(addr, size),
        close=lambda prog: None,
        bind=lambda prog: prog.read,
    )


def kdumpfile_reader(module: Any, corefile: str) -> Reader:
    """`kdumpfile(path)`, `attr['addrxlat.ostype'] = 'linux'` (needed before a kernel-virtual
    read), `read(KDUMP_KVADDR, addr, size)`."""
    kvaddr = module.KDUMP_KVADDR

    def open_() -> Any:
        dump = module.kdumpfile(corefile)
        dump.attr["addrxlat.ostype"] = "linux"
        return dump

    def bind(dump: Any) -> Callable[[int, int], Any]:
        read = dump.read
        return lambda addr, size: read(kvaddr, addr, size)

    return Reader(
        name="libkdumpfile",
        open=open_,
        read=lambda dump, addr, size: bytes(dump.read(kvaddr, addr, size)),
        close=lambda dump: None,
        bind=bind,
    )


def open_close(reader: Reader) -> Callable[[Any], object]:
    """A `measure` run: open then close (the peers' handles are simply dropped)."""

    def run(_: Any) -> None:
        reader.close(reader.open())

    return run


def bench(
    run: Callable[[Any], object],
    setup: Setup,
    runs: int,
    warmup: int,
    teardown: Callable[[Any], object] | None = None,
) -> Cell:
    """Timings of `run`, or the failure of its first try."""
    try:
        run(setup() if setup is not None else None)
    except Exception as error:
        return None, short_error(error)
    return measure(run, runs, warmup=warmup, setup=setup, teardown=teardown), None


def collect_young(_: Any = None) -> None:
    """An untimed `teardown`: frees the reference cycles the run just made (drgn's Program
    is one) that the garbage collector, off while timing, would otherwise keep, so every
    run finds the memory a long-running process with the collector on would reuse."""
    gc.collect(0)


def verify(reader: Reader, dump: Dump) -> str | None:
    """None if the reader opens the dump and reads truth's bytes at every symbol."""
    try:
        handle = reader.open()
    except Exception as error:
        return short_error(error)
    try:
        bad = []
        for sym, addr in dump.symbols.items():
            want = dump.expected.get(sym)
            if want is None:
                continue
            got = bytes(reader.read(handle, addr, len(want)))
            if got != want:
                bad.append(sym)
        banner = bytes(reader.read(handle, dump.banner, BLOCK))
        if banner[: len(dump.expected["linux_banner"])] != dump.expected["linux_banner"]:
            bad.append("linux_banner (4 KiB)")
        return f"wrong bytes at {', '.join(bad)}" if bad else None
    except Exception as error:
        return short_error(error)
    finally:
        reader.close(handle)


@dataclass
class BlockResult:
    """A 4 KiB read on fresh handles: the first read, the same read again, open + first."""

    cold: Cell
    warm: Cell
    open_cold: Cell

    @classmethod
    def failed(cls, cell: Cell) -> BlockResult:
        return cls(cell, cell, cell)


def bench_block(
    reader: Reader, addr: int, runs: int, warmup: int, collect: bool = False
) -> BlockResult:
    """Fresh handle per run: open, first read, same read again, close (untimed; then
    `collect_young` if `collect`)."""
    cold: list[int] = []
    warm: list[int] = []
    open_cold: list[int] = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(warmup + runs):
            t0 = clock()
            handle = reader.open()
            t1 = clock()
            reader.read(handle, addr, BLOCK)
            t2 = clock()
            reader.read(handle, addr, BLOCK)
            t3 = clock()
            reader.close(handle)
            del handle
            if collect:
                collect_young()
            if i >= warmup:
                open_cold.append(t2 - t0)
                cold.append(t2 - t1)
                warm.append(t3 - t2)
    finally:
        gc.enable()
    return BlockResult((Stats.of(cold), None), (Stats.of(warm), None), (Stats.of(open_cold), None))


def random_addrs(dump: Dump, count: int, seed: int = SEED) -> list[int]:
    """`count` runtime addresses of the truth symbols, in a seeded random order."""
    rng = random.Random(seed)
    names = sorted(dump.symbols)
    return [dump.symbols[name] for name in rng.choices(names, k=count)]


def bench_words(
    reader: Reader,
    addrs: list[int],
    reps: int,
    warmup: int,
    collect: bool = False,
    size: int = WORD,
) -> Cell:
    """Total time of len(addrs) reads of `size` bytes on a fresh handle (open untimed;
    then `collect_young` if `collect`)."""
    samples: list[int] = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(warmup + reps):
            handle = reader.open()
            read = reader.bind(handle)
            t0 = clock()
            for addr in addrs:
                read(addr, size)
            t1 = clock()
            reader.close(handle)
            del handle, read
            if collect:
                collect_young()
            if i >= warmup:
                samples.append(t1 - t0)
    finally:
        gc.enable()
    return Stats.of(samples), None


# -- machine ----------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def kvm_rs_version() -> str:
    version = _dist_version("kvm_rs") or _dist_version("kvm-rs") or "?"
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        version += f" (git {commit}{'+dirty' if dirty else ''})"
    except (OSError, subprocess.CalledProcessError):
        pass
    return version


def machine_info(peers: Sequence[Peer]) -> list[tuple[str, str]]:
    info = [
        ("platform", platform.platform()),
        ("cpu", f"{cpu_model()} ({os.cpu_count()} logical CPUs)"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("kvm_rs", kvm_rs_version()),
    ]
    for peer in peers:
        if peer.module is not None:
            info.append((peer.name, f"{peer.version or '?'} ({peer.how})"))
        else:
            info.append((peer.name, f"unavailable: {peer.how}"))
    return info


def emit_header(title: str, out: Output, peers: Sequence[Peer], notes: Sequence[str]) -> None:
    out.emit(f"## {title}")
    out.emit()
    for key, value in machine_info(peers):
        out.emit(f"- {key}: {value}")
    for note in notes:
        out.emit(f"- {note}")
    out.emit()
