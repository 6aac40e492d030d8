#!/usr/bin/env python3
"""kvm_rs beside drgn, libkdumpfile and pyelftools on every corpus dump: the headline benchmark.

    python3 benches/compare.py [--quick] [--runs N] [--out FILE] [--no-peers]

Writes BENCHMARKS.md at the repo root unless --out names another file (--out '' writes
nothing). Every timing cell is the median [min .. max] of N timed runs after warm-ups, page
cache warm, GC off while timing; ratio = peer time / kvm_rs time (> 1x: kvm_rs faster).
Each cell (one reader, one dump, one group of scenarios) runs in a fresh child process of
this script (`--child GROUP:READER:DUMP`, JSON on stdout), so no reader inherits another's
state, leaks or crashes; a child that dies is a FAIL with its stderr.

S1  open + close of the core. kvm_rs: `Kvm(System.map, dump)` + `close()`, System.map already
    opened once in this process (kvm_rs's exec-file cache holds it); drgn: `Program()` +
    `set_core_dump(dump)`; libkdumpfile: `kdumpfile(dump)` + `attr['addrxlat.ostype']`.
S2  open with the stripped vmlinux + resolve the first 10 truth symbols. kvm_rs: `Kvm(vmlinux,
    dump)` + `nlist(10 names)` + close, `kvm_rs.clear_exec_cache()` before each run (a real
    vmlinux parse), and again without clearing (cached); drgn: `Program()` + `set_core_dump`
    + `load_debug_info([vmlinux])` + `symbol(name)` x10, and, since that resolves nothing
    from a stripped vmlinux, drgn's own way to use an ELF symtab alone (the main module's
    loaded file: `loaded_file_status = WANT`, `try_file(vmlinux)`); pyelftools: the vmlinux
    `.symtab` scanned for the 10 names (no dump: link-time addresses; measured once).
S3  the first 4 KiB read at linux_banner on a freshly opened handle (open untimed);
S4  the same read again (warm). Every reader's bytes are checked against truth.json first.
S5  10,000 8-byte reads at the truth symbols' runtime addresses, seeded random order.
S6  `kvm_rs.scan(all dumps)` with threads=1 and threads=2 (interleaved runs); drgn opening
    each dump in a loop (one thread) for reference.
RSS VmRSS growth from opening boot-nokaslr.qemu-elf.vmcore (285 MB) with the exec file already
    cached, then after the first nlist; each probe in a fresh subprocess of this script.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as c
import kvm_rs

NAMES = 10  # S2 resolves the first NAMES truth symbols
READS = 10_000
RSS_DUMP = "boot-nokaslr.qemu-elf.vmcore"
RSS_WARM_DUMP = "boot-nokaslr.mdf-d31-zlib.kdump"  # the exec file is first opened with this
RSS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
RSS_PROBES = ("kvm_rs +System.map", "kvm_rs +vmlinux", "drgn")
RSS_LIMIT_KIB = 2048
GROWTH_NOTE_KIB = 256  # S1 notes a reader whose every open leaves this much VmRSS behind
WARM_LOOP = 1000  # S4 again: back-to-back warm reads, timed as one batch
WARM_LOOP_KEY = "S4 loop"
SCENARIOS = ("S1", "S2", "S3", "S4", WARM_LOOP_KEY, "S5")
ALONE = "kvm_rs.scan alone: "  # S6 rows of one dump each

SYSMAP, VMLINUX = c.EXEC_FILES
KVM = "kvm_rs"
DRGN = "drgn"
LKF = "libkdumpfile"
KVM_PARSE = "kvm_rs parse"
KVM_CACHED = "kvm_rs cached"
DRGN_SYMTAB = "drgn symtab"
ELFTOOLS = "pyelftools"


@dataclass(frozen=True)
class Plan:
    """Repetitions per kind of cell."""

    runs: int  # S1, S2 kvm_rs/drgn, S3/S4
    warmup: int
    elf_runs: int  # pyelftools (about 2 s a run)
    word_reps: int  # S5 batches of READS reads
    scan_runs: int  # S6, per variant, interleaved
    rss_probes: int  # subprocesses per RSS probe

    @classmethod
    def of(cls, args: argparse.Namespace) -> Plan:
        if args.quick:
            plan = cls(runs=7, warmup=1, elf_runs=1, word_reps=3, scan_runs=10, rss_probes=1)
        else:
            plan = cls(runs=100, warmup=5, elf_runs=7, word_reps=25, scan_runs=150, rss_probes=5)
        if args.runs:
            plan = cls(args.runs, plan.warmup, *(min(args.runs, n) for n in plan.counts()))
        return plan

    def counts(self) -> tuple[int, int, int, int]:
        return self.elf_runs, self.word_reps, self.scan_runs, self.rss_probes


Results = dict[str, dict[str, c.Cell]]  # dump name -> column -> cell


@dataclass
class Target:
    """A goal: kvm_rs at least `factor` times faster than `peer` in `scenario` on some dumps."""

    scenario: str
    applies: Callable[[c.Dump], bool]
    scope: str
    ours: str
    peer: str
    factor: float
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.scenario} ≥ {self.factor:g}x {self.peer}"


def is_paging(dump: c.Dump) -> bool:
    return "elf-paging" in dump.name


def is_kdump(dump: c.Dump) -> bool:
    return dump.format == "kdump-compressed"


def is_flattened(dump: c.Dump) -> bool:
    return dump.format == "makedumpfile-flattened"


def every(dump: c.Dump) -> bool:
    return True


TARGETS = [
    Target("S1", is_paging, "paging ELF", KVM, DRGN, 5),
    Target("S1", is_paging, "paging ELF", KVM, LKF, 5),
    Target("S1", is_kdump, "kdump files", KVM, DRGN, 2),
    Target("S1", is_flattened, "flattened file", KVM, DRGN, 5),
    # Issue 11: every open at least drgn's, the plain ELF included.
    Target("S1", every, "every dump", KVM, DRGN, 1, "every open"),
    Target("S2", every, "every dump", KVM_PARSE, DRGN, 30, "load_debug_info, as specified"),
    # Issue 11: the cold vmlinux 2x drgn's symtab-only way, the cached exec file 30x.
    Target("S2", every, "every dump", KVM_PARSE, DRGN_SYMTAB, 2, "cold, drgn's symtab-only way"),
    Target("S2", every, "every dump", KVM_CACHED, DRGN_SYMTAB, 30, "exec file cached"),
    Target("S3", is_kdump, "compressed kdump", KVM, DRGN, 2),
    Target("S4", is_paging, "paging ELF", KVM, LKF, 20),
    # Issue 11: warm 8-byte reads 1.5x drgn.
    Target("S5", every, "every dump", KVM, DRGN, 1.5, "warm 8-byte reads"),
]


def ratio_of(results: Results, dump: c.Dump, ours: str, peer: str) -> tuple[float | None, str]:
    """(peer / kvm_rs, failure text) for one dump."""
    row = results.get(dump.name, {})
    mine, theirs = row.get(ours, c.MISSING), row.get(peer, c.MISSING)
    if mine[1] is not None:
        return None, f"kvm_rs FAIL: {mine[1]}"
    if theirs[1] is not None:
        return None, f"{peer} FAIL"
    a, b = c.cell_median(theirs), c.cell_median(mine)
    if a is None or b is None:
        return None, f"{peer} not run"
    return a / b, ""


def verdict(value: float | None, factor: float) -> str:
    if value is None:
        return "n/a"
    return f"{'✓' if value >= factor else '✗'} {c.fmt_ratio(value, 1.0)}"


def target_notes(results: Results, scenario: str, dump: c.Dump) -> str:
    """The targets of one scenario cell, for the table's last column."""
    notes = []
    for target in TARGETS:
        if target.scenario != scenario or not target.applies(dump):
            continue
        value, why = ratio_of(results, dump, target.ours, target.peer)
        text = verdict(value, target.factor) if value is not None else f"n/a ({why})"
        notes.append(f"≥{target.factor:g}x {target.peer}: {text}")
    return "; ".join(notes)


# -- cells in fresh processes ----------------------------------------------------------------

Answer = tuple[dict[str, dict[str, c.Cell]], dict[str, str]]
"""What a child measured: scenario -> column -> cell, and notes."""


@dataclass(frozen=True)
class Job:
    """One child process: a group of scenarios, for one reader on one dump ("-": none)."""

    group: str  # open (S1) | reads (S3, S4, S5) | nlist (S2) | elftools (S2) | scan (S6)
    reader: str
    dump: str

    @property
    def spec(self) -> str:
        return f"{self.group}:{self.reader}:{self.dump}"

    @classmethod
    def parse(cls, spec: str) -> Job:
        group, reader, dump = spec.split(":", 2)
        return cls(group, reader, dump)

    def columns(self) -> dict[str, list[str]]:
        """The cells this job fills, for reporting its failure."""
        if self.group == "open":
            return {"S1": [self.reader]}
        if self.group == "reads":
            return {scenario: [self.reader] for scenario in ("S3", "S4", WARM_LOOP_KEY, "S5")}
        if self.group == "nlist":
            return {"S2": [KVM_PARSE, KVM_CACHED] if self.reader == KVM else [DRGN, DRGN_SYMTAB]}
        if self.group == "elftools":
            return {"S2": [ELFTOOLS]}
        return {"S6": ["kvm_rs.scan threads=1", "kvm_rs.scan threads=2"]}


def encode(cell: c.Cell) -> dict[str, Any]:
    stats, error = cell
    if stats is None:
        return {"error": error or "no result"}
    return {"stats": [stats.median, stats.min, stats.max, stats.n]}


def decode(data: dict[str, Any]) -> c.Cell:
    if "stats" in data:
        median, low, high, n = data["stats"]
        return c.Stats(float(median), int(low), int(high), int(n)), None
    return None, str(data.get("error"))


def child_main(spec: str, args: argparse.Namespace) -> int:
    """Runs one job and prints its answer as the last line of stdout (JSON)."""
    job = Job.parse(spec)
    plan = Plan.of(args)
    folder = c.corpus_dir()
    dumps = c.load_dumps(folder)
    dump = next((d for d in dumps if d.name == job.dump), None)
    work = {
        "open": child_open,
        "reads": child_reads,
        "nlist": child_nlist,
        "elftools": child_elftools,
        "scan": child_scan,
    }[job.group]
    try:
        cells, notes = work(job, dump, folder, dumps, plan)
    except Exception as error:  # e.g. a peer that cannot be imported here
        why = c.short_error(error)
        cells, notes = (
            {s: {col: (None, why) for col in cols} for s, cols in job.columns().items()},
            {},
        )
    answer = {
        "cells": {
            s: {col: encode(cell) for col, cell in cols.items()} for s, cols in cells.items()
        },
        "notes": notes,
    }
    print(json.dumps(answer))
    return 0


def child_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--quick"] if args.quick else []
    return flags + (["--runs", str(args.runs)] if args.runs else [])


def run_job(job: Job, args: argparse.Namespace) -> Answer:
    """The job in a fresh `python3 compare.py --child SPEC` process; a crash is a FAIL."""
    command = [sys.executable, __file__, "--child", job.spec, *child_flags(args)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
        cells = {
            scenario: {col: decode(data) for col, data in cols.items()}
            for scenario, cols in answer["cells"].items()
        }
        return cells, {str(k): str(v) for k, v in answer.get("notes", {}).items()}
    except (IndexError, KeyError, TypeError, ValueError):
        code = proc.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])[-300:]
        why = f"child process {how}: {tail}"
        return {s: {col: (None, why) for col in cols} for s, cols in job.columns().items()}, {}


# -- S1, S3, S4, S5 ---------------------------------------------------------------------------


@dataclass
class Peers:
    """The peers as the parent process found them (for versions and availability)."""

    drgn: c.Peer
    lkf: c.Peer
    elftools: c.Peer

    def available(self, name: str) -> bool:
        peer = {DRGN: self.drgn, DRGN_SYMTAB: self.drgn, LKF: self.lkf, ELFTOOLS: self.elftools}
        return name not in peer or peer[name].module is not None

    def readers(self) -> list[str]:
        return [KVM, *(name for name in (DRGN, LKF) if self.available(name))]


def warm_exec_cache(folder: Path, dumps: Sequence[c.Dump]) -> None:
    """Opens System.map once, so kvm_rs's per-process exec-file cache holds it."""
    for dump in dumps:
        try:
            kvm_rs.Kvm(execfile=str(folder / SYSMAP), corefile=str(dump.path)).close()
            return
        except kvm_rs.KvmError:
            continue


def need(peer: c.Peer) -> Any:
    if peer.module is None:
        raise RuntimeError(f"{peer.name} {peer.how}")
    return peer.module


def make_reader(name: str, folder: Path, core: str) -> c.Reader:
    if name == KVM:
        return c.kvm_reader("+System.map", str(folder / SYSMAP), core)
    if name == DRGN:
        return c.drgn_reader(need(c.load_drgn()), core)
    return c.kdumpfile_reader(need(c.load_kdumpfile()), core)


def child_open(job: Job, dump: c.Dump, folder: Path, dumps: list[c.Dump], plan: Plan) -> Answer:
    """S1 for one reader on one dump, and how much VmRSS each open + drop left behind."""
    reader = make_reader(job.reader, folder, str(dump.path))
    if job.reader == KVM:
        warm_exec_cache(folder, dumps)
    before = proc_status()["VmRSS"]
    cell = c.bench(c.open_close(reader), None, plan.runs, plan.warmup, c.collect_young)
    gc.collect()
    grown = proc_status()["VmRSS"] - before
    opens = 1 + (plan.warmup + plan.runs if cell[0] is not None else 0)
    return {"S1": {job.reader: cell}}, {"rss_per_open_kib": f"{grown / opens:.1f}"}


def child_reads(job: Job, dump: c.Dump, folder: Path, dumps: list[c.Dump], plan: Plan) -> Answer:
    """S3 (cold 4 KiB), S4 (warm 4 KiB) and S5 (READS random 8-byte reads), one reader."""
    reader = make_reader(job.reader, folder, str(dump.path))
    if job.reader == KVM:
        warm_exec_cache(folder, dumps)
    failure = c.verify(reader, dump)
    if failure is not None:
        fail: c.Cell = (None, failure)
        return {scenario: {job.reader: fail} for scenario in ("S3", "S4", WARM_LOOP_KEY, "S5")}, {}
    block = c.bench_block(reader, dump.banner, plan.runs, plan.warmup, collect=True)
    addrs = c.random_addrs(dump, READS)
    words = c.bench_words(reader, addrs, plan.word_reps, plan.warmup, collect=True)
    loop = c.bench_words(
        reader, [dump.banner] * WARM_LOOP, plan.word_reps, plan.warmup, True, c.BLOCK
    )
    return {
        "S3": {job.reader: block.cold},
        "S4": {job.reader: block.warm},
        WARM_LOOP_KEY: {job.reader: per_call(loop, WARM_LOOP)},
        "S5": {job.reader: words},
    }, {}


def per_call(cell: c.Cell, calls: int) -> c.Cell:
    """A batch's timings as the time of one call."""
    stats, error = cell
    if stats is None:
        return cell
    return c.Stats(stats.median / calls, stats.min // calls, stats.max // calls, stats.n), error


def peer_table(
    out: c.Output,
    title: str,
    scenario: str,
    results: Results,
    dumps: Sequence[c.Dump],
    peers: Peers,
) -> None:
    out.emit(f"### {title}")
    out.emit()
    headers = ["dump", "format", KVM, DRGN, "drgn / kvm_rs", LKF, "lkf / kvm_rs"]
    has_targets = any(target.scenario == scenario for target in TARGETS)
    if has_targets:
        headers.append("targets")
    rows = []
    for dump in dumps:
        row = results[dump.name]
        ours = c.cell_median(row.get(KVM, c.MISSING))
        cells: list[object] = [c.short_name(dump.name), dump.format, show(row, KVM, peers)]
        for peer in (DRGN, LKF):
            cells.append(show(row, peer, peers))
            cells.append(c.fmt_ratio(c.cell_median(row.get(peer, c.MISSING)), ours))
        if has_targets:
            cells.append(target_notes(results, scenario, dump))
        rows.append(cells)
    c.print_table(headers, rows, out)
    emit_failures(out, results)


def show(row: dict[str, c.Cell], name: str, peers: Peers) -> str:
    return c.show(row.get(name, c.MISSING), spread=True, available=peers.available(name))


def emit_failures(out: c.Output, results: Results) -> None:
    seen: dict[tuple[str, str], list[str]] = {}
    for dump, row in results.items():
        for name, cell in row.items():
            if cell[1] is not None:
                seen.setdefault((name, cell[1]), []).append(c.short_name(dump))
    if seen:
        out.emit()
        for (name, why), where in seen.items():
            out.emit(f"- FAIL {name} on {', '.join(where)}: {why}")
    out.emit()


# -- S2 ---------------------------------------------------------------------------------------

Resolve = Callable[[], dict[str, int]]


def bench_resolve(
    resolve: Resolve, want: dict[str, int], setup: c.Setup, runs: int, warmup: int
) -> c.Cell:
    """Timings of `resolve`, once its first answer has matched `want`; else the failure."""
    try:
        if setup is not None:
            setup()
        got = resolve()
    except Exception as error:
        return None, c.short_error(error)
    wrong = [name for name in want if got.get(name) != want[name]]
    if wrong:
        return None, f"wrong or missing address for {', '.join(wrong)}"
    run = c.measure(lambda _: resolve(), runs, warmup, setup, teardown=c.collect_young)
    return run, None


def kvm_resolve(vmlinux: str, core: str, names: list[str]) -> Resolve:
    def resolve() -> dict[str, int]:
        with kvm_rs.Kvm(execfile=vmlinux, corefile=core) as handle:
            return handle.nlist(names)

    return resolve


def drgn_debug_info_resolve(drgn: Any, vmlinux: str, core: str, names: list[str]) -> Resolve:
    """As specified: load_debug_info([vmlinux]), then prog.symbol() per name."""

    def resolve() -> dict[str, int]:
        prog = drgn.Program()
        prog.set_core_dump(core)
        prog.load_debug_info([vmlinux])
        try:
            return {name: prog.symbol(name).address for name in names}
        except LookupError as error:
            raise LookupError(f"{error} after load_debug_info([vmlinux]) {why_not(prog)}") from None

    return resolve


def why_not(prog: Any) -> str:
    """What drgn did with the vmlinux, from its main module's file statuses."""
    try:
        module = prog.main_module()
    except LookupError:
        return "(no main module)"
    return (
        f"(main module: loaded file {module.loaded_file_status.name} {module.loaded_file_path}, "
        f"debug file {module.debug_file_status.name} {module.debug_file_path}: "
        "drgn takes a kernel file only as debug info, which a stripped vmlinux lacks)"
    )


def drgn_symtab_resolve(drgn: Any, vmlinux: str, core: str, names: list[str]) -> Resolve:
    """drgn's way to use a file for its ELF symbol table alone: the kernel module's loaded
    file, which drgn does not want by default."""

    def resolve() -> dict[str, int]:
        prog = drgn.Program()
        prog.set_core_dump(core)
        module = prog.main_module("kernel", create=True)
        module.loaded_file_status = drgn.ModuleFileStatus.WANT
        module.try_file(vmlinux)
        return {name: prog.symbol(name).address for name in names}

    return resolve


def elftools_resolve(module: Any, vmlinux: str, names: list[str]) -> Resolve:
    """pyelftools: scan '.symtab' until every name is found (link-time addresses)."""
    elffile = module.elf.elffile
    sections = module.elf.sections

    def resolve() -> dict[str, int]:
        wanted = set(names)
        found: dict[str, int] = {}
        with open(vmlinux, "rb") as stream:
            symtab = elffile.ELFFile(stream).get_section_by_name(".symtab")
            if not isinstance(symtab, sections.SymbolTableSection):
                raise RuntimeError(f"{vmlinux}: no .symtab")
            for symbol in symtab.iter_symbols():
                if symbol.name in wanted and symbol.name not in found:
                    found[symbol.name] = symbol["st_value"]
                    if len(found) == len(wanted):
                        break
        return found

    return resolve


def child_nlist(job: Job, dump: c.Dump, folder: Path, dumps: list[c.Dump], plan: Plan) -> Answer:
    """S2 for kvm_rs (parse and cached) or drgn (load_debug_info and symtab) on one dump."""
    vmlinux = str(folder / VMLINUX)
    core = str(dump.path)
    names = list(dump.symbols)[:NAMES]
    want = {name: dump.symbols[name] for name in names}
    row: dict[str, c.Cell] = {}
    if job.reader == KVM:
        resolve = kvm_resolve(vmlinux, core, names)
        row[KVM_PARSE] = bench_resolve(
            resolve, want, kvm_rs.clear_exec_cache, plan.runs, plan.warmup
        )
        row[KVM_CACHED] = bench_resolve(resolve, want, None, plan.runs, plan.warmup)
    else:
        drgn = need(c.load_drgn())
        for key, make in ((DRGN, drgn_debug_info_resolve), (DRGN_SYMTAB, drgn_symtab_resolve)):
            resolve = make(drgn, vmlinux, core, names)
            row[key] = bench_resolve(resolve, want, None, plan.runs, plan.warmup)
    return {"S2": row}, {}


def child_elftools(
    job: Job, dump: c.Dump | None, folder: Path, dumps: list[c.Dump], plan: Plan
) -> Answer:
    """S2 pyelftools: the vmlinux alone, link-time addresses (truth's nm addresses)."""
    truth = c.load_truth(folder)["dumps"][dumps[0].name]["symbols"]
    names = list(dumps[0].symbols)[:NAMES]
    want = {name: int(truth[name]["nm_address"], 16) for name in names}
    resolve = elftools_resolve(need(load_elftools()), str(folder / VMLINUX), names)
    return {"S2": {ELFTOOLS: bench_resolve(resolve, want, None, plan.elf_runs, 0)}}, {}


def nlist_table(out: c.Output, results: Results, dumps: Sequence[c.Dump], peers: Peers) -> None:
    out.emit(
        f"### S2: open with the stripped vmlinux + resolve {NAMES} symbols "
        "(ratio = peer / kvm_rs parse)"
    )
    out.emit()
    headers = [
        "dump",
        "kvm_rs parse",
        "kvm_rs cached",
        "drgn load_debug_info",
        "drgn symtab",
        "drgn symtab / parse",
        "drgn symtab / cached",
        "pyelftools †",
        "pyelftools / parse",
        "targets",
    ]
    rows = []
    for dump in dumps:
        row = results[dump.name]
        parse = c.cell_median(row[KVM_PARSE])
        cached = c.cell_median(row[KVM_CACHED])
        symtab = c.cell_median(row.get(DRGN_SYMTAB, c.MISSING))
        rows.append(
            [
                c.short_name(dump.name),
                show(row, KVM_PARSE, peers),
                show(row, KVM_CACHED, peers),
                show(row, DRGN, peers),
                show(row, DRGN_SYMTAB, peers),
                c.fmt_ratio(symtab, parse),
                c.fmt_ratio(symtab, cached),
                c.show(row.get(ELFTOOLS, c.MISSING), available=peers.available(ELFTOOLS)),
                c.fmt_ratio(c.cell_median(row.get(ELFTOOLS, c.MISSING)), parse),
                target_notes(results, "S2", dump),
            ]
        )
    c.print_table(headers, rows, out)
    out.emit()
    out.emit(
        "† pyelftools opens no dump: one measurement of the vmlinux `.symtab` scan "
        "(link-time addresses), repeated on every row for the ratio."
    )
    emit_failures(out, results)


# -- S6 ---------------------------------------------------------------------------------------


@dataclass
class ScanResult:
    cells: dict[str, c.Cell] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def measure_interleaved(runs: dict[str, Callable[[], object]], n: int, warmup: int) -> dict:
    """Each run once per round, rounds repeated: drifting load hits every variant alike."""
    samples: dict[str, list[int]] = {name: [] for name in runs}
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(warmup + n):
            for name, run in runs.items():
                t0 = clock()
                run()
                t1 = clock()
                c.collect_young()
                if i >= warmup:
                    samples[name].append(t1 - t0)
    finally:
        gc.enable()
    return {name: c.Stats.of(values) for name, values in samples.items()}


def child_scan(
    job: Job, dump: c.Dump | None, folder: Path, dumps: list[c.Dump], plan: Plan
) -> Answer:
    drgn = None if job.reader == "no-peers" else c.load_drgn().module
    result = run_scan(folder, dumps, drgn, plan)
    return {"S6": result.cells}, result.notes


def run_scan(folder: Path, dumps: Sequence[c.Dump], drgn: Any, plan: Plan) -> ScanResult:
    paths = [str(dump.path) for dump in dumps]
    sysmap = str(folder / SYSMAP)
    variants = {
        "kvm_rs.scan threads=1": (None, 1),
        "kvm_rs.scan threads=2": (None, 2),
        "kvm_rs.scan threads=1, execfile=System.map": (sysmap, 1),
        "kvm_rs.scan threads=2, execfile=System.map": (sysmap, 2),
    }
    result = ScanResult()
    runs: dict[str, Callable[[], object]] = {}
    for name, (execfile, threads) in variants.items():
        reports = kvm_rs.scan(paths, execfile=execfile, threads=threads)
        bad = [f"{Path(r.path).name}: {r.error}" for r in reports if not r.ok]
        if bad:
            result.cells[name] = (None, "; ".join(bad))
            continue
        result.notes[name] = f"{len(reports)}/{len(paths)} ok"
        runs[name] = lambda e=execfile, t=threads: kvm_rs.scan(paths, execfile=e, threads=t)
    for path in paths:  # how the work divides: each dump alone
        runs[f"{ALONE}{c.short_name(Path(path).name)}"] = lambda p=path: kvm_rs.scan([p], threads=1)
    if drgn is not None:
        failed = []
        for path in paths:
            try:
                drgn.Program().set_core_dump(path)
            except Exception as error:
                failed.append(f"{Path(path).name} FAIL ({c.short_error(error, 80)})")
        name = "drgn Program + set_core_dump, each dump in a loop"
        result.notes[name] = f"{len(paths) - len(failed)}/{len(paths)} open; " + "; ".join(failed)
        runs[name] = lambda: drgn_loop(drgn, paths)
    with quiet_stderr():  # drgn's notice about the flattened file, on every round
        timed = measure_interleaved(runs, plan.scan_runs, plan.warmup)
    for name, stats in timed.items():
        result.cells[name] = (stats, None)
    return result


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null (C libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def drgn_loop(drgn: Any, paths: Sequence[str]) -> None:
    for path in paths:
        with contextlib.suppress(Exception):  # the flattened file; counted in the notes
            drgn.Program().set_core_dump(path)


def scan_table(out: c.Output, result: ScanResult, dumps: Sequence[c.Dump]) -> None:
    out.emit(f"### S6: `kvm_rs.scan` of the whole corpus ({len(dumps)} dumps)")
    out.emit()
    one = c.cell_median(result.cells.get("kvm_rs.scan threads=1", c.MISSING))
    alone = {
        name.removeprefix(ALONE): stats.median
        for name, (stats, _) in result.cells.items()
        if name.startswith(ALONE) and stats is not None
    }
    rows = []
    for name, cell in result.cells.items():
        if name.startswith(ALONE):
            continue
        base = name.replace("threads=2", "threads=1")
        ref = c.cell_median(result.cells.get(base, c.MISSING))
        here = c.cell_median(cell)
        if name.startswith("drgn"):
            vs = f"{c.fmt_ratio(here, one)} of kvm_rs 1 thread"
        elif "threads=2" in name:
            vs = f"speed-up {c.fmt_ratio(ref, here)} over 1 thread"
        else:
            vs = ""
        rows.append([name, c.show(cell, spread=True), result.notes.get(name, cell[1] or ""), vs])
    c.print_table(["run", "median [min .. max]", "reports", "ratio"], rows, out)
    out.emit()
    if alone and one is not None:
        total = sum(alone.values())
        largest = max(alone, key=alone.__getitem__)
        bound = min(2.0, one / alone[largest])
        out.emit(
            "Each dump scanned alone (threads=1, same interleaved rounds): "
            + ", ".join(f"{name} {c.fmt_ns(ns)}" for name, ns in alone.items())
            + f"; sum {c.fmt_ns(total)}. The largest, {largest}, is "
            f"{alone[largest] / total:.0%} of the sum; two threads can finish no sooner than "
            f"it does alone, so the speed-up over the 1-thread scan ({c.fmt_ns(one)}) is at "
            f"most about {bound:.2f}x on this corpus."
        )
        out.emit()


def scan_target(result: ScanResult) -> str:
    """The S6 target's verdict: threads=2 at least 1.8x faster than threads=1."""
    one = c.cell_median(result.cells.get("kvm_rs.scan threads=1", c.MISSING))
    two = c.cell_median(result.cells.get("kvm_rs.scan threads=2", c.MISSING))
    speedup = one / two if one is not None and two is not None else None
    return verdict(speedup, 1.8)


# -- RSS --------------------------------------------------------------------------------------


def proc_status() -> dict[str, int]:
    """RSS_FIELDS from /proc/self/status, in KiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in RSS_FIELDS:
            values[key] = int(rest.split()[0])
    return values


def rss_probe(kind: str) -> int:
    """Runs in a fresh subprocess: prints the status before, after the open and after the
    first symbol lookup, as one JSON line."""
    folder = c.corpus_dir()
    big = str(folder / RSS_DUMP)
    warm = str(folder / RSS_WARM_DUMP)
    names = list(c.load_dumps(folder)[0].symbols)[:NAMES]
    vmlinux = str(folder / VMLINUX)
    steps: list[dict[str, int]] = []
    if kind.startswith(KVM):
        execfile = str(folder / (SYSMAP if kind.endswith("System.map") else VMLINUX))
        kvm_rs.Kvm(execfile=execfile, corefile=warm).close()  # the exec cache holds it now
        gc.collect()
        steps.append(proc_status())
        handle = kvm_rs.Kvm(execfile=execfile, corefile=big)
        steps.append(proc_status())
        found = handle.nlist(names)
        steps.append(proc_status())
        ok = len(found) == len(names)
    elif kind == DRGN:
        drgn = c.load_drgn().module
        if drgn is None:
            print(json.dumps({"error": "drgn not installed"}))
            return 0
        drgn.Program().set_core_dump(warm)
        gc.collect()
        steps.append(proc_status())
        prog = drgn.Program()
        prog.set_core_dump(big)
        steps.append(proc_status())
        module = prog.main_module("kernel", create=True)
        module.loaded_file_status = drgn.ModuleFileStatus.WANT
        module.try_file(vmlinux)
        found = {name: prog.symbol(name).address for name in names}
        steps.append(proc_status())
        ok = len(found) == len(names)
    else:
        raise SystemExit(f"unknown probe {kind}")
    print(json.dumps({"steps": steps, "ok": ok}))
    return 0


@dataclass
class RssResult:
    steps: list[dict[str, int]] | None
    error: str | None
    probes: int


def run_rss(plan: Plan, peers: Peers) -> dict[str, RssResult]:
    results = {}
    for kind in RSS_PROBES:
        if kind == DRGN and peers.drgn.module is None:
            continue
        runs: list[list[dict[str, int]]] = []
        error = None
        for _ in range(plan.rss_probes):
            proc = subprocess.run(
                [sys.executable, __file__, "--rss-probe", kind],
                capture_output=True,
                text=True,
                check=False,
            )
            lines = proc.stdout.strip().splitlines()
            try:
                answer = json.loads(lines[-1])
            except (IndexError, json.JSONDecodeError):
                error = f"probe exited {proc.returncode}: {proc.stderr.strip()[-300:]}"
                break
            if "error" in answer or not answer.get("ok"):
                error = answer.get("error", "symbols not found")
                break
            runs.append(answer["steps"])
        if error is not None or not runs:
            results[kind] = RssResult(None, error or "no probe ran", 0)
            continue
        # The median probe, field by field and step by step.
        steps = [
            {key: int(statistics.median(run[i][key] for run in runs)) for key in RSS_FIELDS}
            for i in range(len(runs[0]))
        ]
        results[kind] = RssResult(steps, None, len(runs))
    return results


def fmt_kib(kib: float) -> str:
    return f"{kib / 1024:.2f} MiB" if abs(kib) >= 1024 else f"{kib:.0f} KiB"


def rss_target(results: dict[str, RssResult]) -> str:
    """The RSS target's verdict: kvm_rs (+System.map) grows < 2 MiB opening RSS_DUMP."""
    result = results.get(f"{KVM} +System.map")
    if result is None or result.steps is None:
        return "n/a (probe failed)"
    grow = result.steps[1]["VmRSS"] - result.steps[0]["VmRSS"]
    return f"{'✓' if grow < RSS_LIMIT_KIB else '✗'} {fmt_kib(grow)}"


def rss_table(out: c.Output, results: dict[str, RssResult]) -> None:
    out.emit(f"### RSS growth: opening {RSS_DUMP} (285 MB), then the first symbol lookup")
    out.emit()
    headers = [
        "probe",
        "VmRSS before",
        "Δ VmRSS open",
        "(anon / file)",
        "Δ VmRSS + first lookup",
        "(anon / file)",
        "Δ VmHWM total",
        "target",
    ]
    rows = []
    for kind, result in results.items():
        if result.steps is None:
            rows.append([kind, "FAIL", "-", "-", "-", "-", "-", result.error or ""])
            continue
        before, opened, looked = result.steps

        def delta(a: dict[str, int], b: dict[str, int], key: str) -> float:
            return b[key] - a[key]

        grow = delta(before, opened, "VmRSS")
        note = f"< 2 MiB after open: {rss_target(results)}" if kind == f"{KVM} +System.map" else ""
        rows.append(
            [
                kind,
                fmt_kib(before["VmRSS"]),
                fmt_kib(grow),
                f"{fmt_kib(delta(before, opened, 'RssAnon'))} / "
                f"{fmt_kib(delta(before, opened, 'RssFile'))}",
                fmt_kib(delta(before, looked, "VmRSS")),
                f"{fmt_kib(delta(before, looked, 'RssAnon'))} / "
                f"{fmt_kib(delta(before, looked, 'RssFile'))}",
                fmt_kib(delta(before, looked, "VmHWM")),
                note,
            ]
        )
    c.print_table(headers, rows, out)
    out.emit()
    probes = max((r.probes for r in results.values()), default=0)
    out.emit(
        f"Each probe is a fresh `python3 benches/compare.py --rss-probe ...` process (median of "
        f"{probes}); the exec file is first opened with {RSS_WARM_DUMP} (kvm_rs: so its "
        "exec-file cache holds it; drgn: so its libraries are loaded), then VmRSS/RssAnon/"
        "RssFile/VmHWM come from /proc/self/status. kvm_rs lookup: `nlist` of the 10 names; "
        "drgn lookup: the vmlinux as its kernel module's loaded file + `symbol()` x10."
    )
    out.emit()


# -- report -----------------------------------------------------------------------------------


def targets_table(
    out: c.Output,
    dumps: Sequence[c.Dump],
    tables: dict[str, Results],
    scan_verdict: str,
    rss_verdict: str,
) -> list[str]:
    """The summary; returns the missed targets, one line each."""
    out.emit("### Targets")
    out.emit()
    rows = []
    missed = []
    for target in TARGETS:
        results = tables[target.scenario]
        applicable = [dump for dump in dumps if target.applies(dump)]
        measured = []
        unmeasured: dict[str, list[str]] = {}
        mark = "✓"
        for dump in applicable:
            value, why = ratio_of(results, dump, target.ours, target.peer)
            where = c.short_name(dump.name)
            if value is None:
                unmeasured.setdefault(why, []).append(where)
                if why.startswith(KVM):
                    mark = "✗"
            else:
                measured.append(f"{where}: {verdict(value, target.factor)}")
                if value < target.factor:
                    mark = "✗"
        for why, where in unmeasured.items():
            on = f"all {len(where)}" if len(where) == len(applicable) > 1 else ", ".join(where)
            measured.append(f"{on}: n/a ({why})")
        if mark == "✓" and len(measured) == len(unmeasured):
            mark = "n/a"
        label = target.label + (f" ({target.note})" if target.note else "")
        rows.append([label, target.scope, "; ".join(measured), mark])
        if mark != "✓":
            missed.append(f"{mark} {label}: {'; '.join(measured)}")
    rows.append(["S6 2 threads ≥ 1.8x 1 thread", "whole corpus", scan_verdict, scan_verdict[:1]])
    if not scan_verdict.startswith("✓"):
        missed.append(f"{scan_verdict[:1]} S6 2 threads ≥ 1.8x 1 thread: {scan_verdict}")
    rows.append(["RSS after open < 2 MiB", RSS_DUMP, rss_verdict, rss_verdict[:1]])
    if not rss_verdict.startswith("✓"):
        missed.append(f"{rss_verdict[:1]} RSS after open < 2 MiB: {rss_verdict}")
    c.print_table(["target", "where", "measured (peer / kvm_rs)", "met"], rows, out)
    out.emit()
    return missed


def main() -> int:
    parser = c.arg_parser(__doc__.splitlines()[0])
    parser.set_defaults(out=str(c.REPO / "BENCHMARKS.md"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rss-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args.child, args)
    if args.rss_probe:
        return rss_probe(args.rss_probe)
    started = time.monotonic()
    load_start = os.getloadavg()
    plan = Plan.of(args)
    folder = c.corpus_dir()
    dumps = c.load_dumps(folder)

    no = "skipped (--no-peers)"
    peers = Peers(
        drgn=c.Peer(DRGN, None, None, no) if args.no_peers else c.load_drgn(),
        lkf=c.Peer(LKF, None, None, no) if args.no_peers else c.load_kdumpfile(),
        elftools=c.Peer(ELFTOOLS, None, None, no) if args.no_peers else load_elftools(),
    )

    jobs = [
        Job(group, reader, dump.name)
        for group in ("open", "reads")
        for dump in dumps
        for reader in peers.readers()
    ]
    jobs += [
        Job("nlist", reader, dump.name)
        for dump in dumps
        for reader in (KVM, DRGN)
        if peers.available(reader)
    ]
    if peers.available(ELFTOOLS):
        jobs.append(Job("elftools", ELFTOOLS, "-"))
    tables: dict[str, Results] = {s: {d.name: {} for d in dumps} for s in SCENARIOS}
    growth: dict[tuple[str, str], float] = {}  # (reader, dump) -> KiB of VmRSS per open
    for number, job in enumerate(jobs, 1):
        print(f"... [{number}/{len(jobs)}] {job.spec}", file=sys.stderr, flush=True)
        cells, notes = run_job(job, args)
        for scenario, columns in cells.items():
            for row in (
                tables[scenario].values() if job.dump == "-" else [tables[scenario][job.dump]]
            ):
                row.update(columns)
        if "rss_per_open_kib" in notes:
            growth[(job.reader, job.dump)] = float(notes["rss_per_open_kib"])
    print("... S6 scan", file=sys.stderr, flush=True)
    cells, notes = run_job(Job("scan", DRGN if peers.available(DRGN) else "no-peers", "-"), args)
    scan = ScanResult(cells.get("S6", {}), notes)
    print("... RSS probes", file=sys.stderr, flush=True)
    rss = run_rss(plan, peers)
    load_end = os.getloadavg()
    elapsed = time.monotonic() - started

    out = c.Output()
    emit_intro(out, args, plan, elapsed)
    notes_out = [f"corpus: {folder} ({len(dumps)} dumps)"]
    if peers.drgn.module is not None and getattr(peers.drgn.module, "_with_libkdumpfile", 0):
        notes_out.append("drgn reads kdump files through the libkdumpfile built into its wheel")
    notes_out.append(
        f"load average (1 min): {load_start[0]:.2f} at start, {load_end[0]:.2f} at end"
    )
    c.emit_header("Machine and versions", out, [peers.drgn, peers.lkf, peers.elftools], notes_out)
    missed = targets_table(out, dumps, tables, scan_target(scan), rss_target(rss))
    out.emit("## Results")
    out.emit()
    peer_table(out, "S1: open + close of the core", "S1", tables["S1"], dumps, peers)
    emit_growth(out, growth)
    nlist_table(out, tables["S2"], dumps, peers)
    peer_table(
        out,
        "S3: first 4 KiB read at linux_banner on a fresh handle (open not timed)",
        "S3",
        tables["S3"],
        dumps,
        peers,
    )
    peer_table(out, "S4: the same 4 KiB read again (warm)", "S4", tables["S4"], dumps, peers)
    peer_table(
        out,
        f"S4 loop: {WARM_LOOP:,} warm 4 KiB reads at linux_banner back to back, per read "
        "(no clock call per read: the cost of the call itself)",
        WARM_LOOP_KEY,
        tables[WARM_LOOP_KEY],
        dumps,
        peers,
    )
    peer_table(
        out,
        f"S5: {READS:,} random 8-byte reads at the truth symbols (total for the batch)",
        "S5",
        tables["S5"],
        dumps,
        peers,
    )
    scan_table(out, scan, dumps)
    rss_table(out, rss)
    if missed:
        print("\nmissed targets:", file=sys.stderr)
        for line in missed:
            print(f"- {line}", file=sys.stderr)
    out.save(args.out)
    return 0


def emit_growth(out: c.Output, growth: dict[tuple[str, str], float]) -> None:
    """Readers whose open + drop left memory behind (VmRSS over the S1 loop, per open)."""
    kept = {key: kib for key, kib in growth.items() if kib >= GROWTH_NOTE_KIB}
    if not kept:
        return
    out.emit("VmRSS left behind per open + drop during S1 (each cell's own process):")
    out.emit()
    for (reader, dump), kib in sorted(kept.items()):
        out.emit(f"- {reader} on {c.short_name(dump)}: {fmt_kib(kib)} per open")
    out.emit()


def load_elftools() -> c.Peer:
    try:
        module = importlib.import_module("elftools")
        importlib.import_module("elftools.elf.elffile")
        importlib.import_module("elftools.elf.sections")
    except ImportError as error:
        return c.Peer(ELFTOOLS, None, None, f"not installed ({error}); `pip install pyelftools`")
    return c.Peer(ELFTOOLS, module, getattr(module, "__version__", None), "PyPI")


def emit_intro(
    out: c.Output,
    args: argparse.Namespace,
    plan: Plan,
    elapsed: float,
) -> None:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "a --quick run (a smoke test: too few runs to compare)" if args.quick else "a full run"
    out.emit("# kvm_rs benchmarks: kvm_rs beside drgn, libkdumpfile and pyelftools")
    out.emit()
    out.emit(
        f"Written by `python3 benches/compare.py` ({mode}, {elapsed:.0f} s, {when}). "
        "To reproduce, from the repo root:"
    )
    out.emit()
    out.emit(
        "    python3 ../shared/corpus/unpack.py      # the corpus, once: ~/.cache/kvm-rs-corpus"
    )
    out.emit("    pip install . drgn pyelftools           # kvm_rs and two peers")
    out.emit("    apt-get install python3-libkdumpfile    # libkdumpfile's Python binding (Debian)")
    out.emit(
        "    python3 benches/compare.py              # about a minute on 2 CPUs; --quick: ~15 s"
    )
    out.emit()
    out.emit(
        f"Every timing is the median [min .. max] of {plan.runs} timed runs after "
        f"{plan.warmup} warm-up(s) (S2 pyelftools: {plan.elf_runs}; S5: {plan.word_reps} "
        f"batches; S6: {plan.scan_runs} interleaved rounds), with a warm page cache and the "
        "garbage collector off while timing. Ratios are peer time / kvm_rs time: above 1x "
        "kvm_rs is faster. The machine has "
        f"{os.cpu_count()} logical CPUs that other work may share: medians over many runs "
        "resist that noise, the min .. max spread shows it. Each cell (one reader, one dump, "
        "one group of scenarios) is measured in a fresh `benches/compare.py --child` process, "
        "because the peers carry state from one open to the next: Debian's libkdumpfile "
        "binding frees no kdumpfile object (see the VmRSS note under S1); in one shared "
        "process drgn 0.3.0 opened kdump files about 1.4x faster once Debian's libkdumpfile "
        "had opened one, and the paging ELF about 2x slower once drgn had opened a kdump file. "
        "Between timed runs (untimed) the young generation is collected, so drgn's Program "
        "reference cycles are freed as they would be in a process with the collector on. "
        "A reader that cannot open a file, or whose bytes or addresses disagree with "
        "truth.json, shows FAIL, with its reason under the table. The scenarios are described "
        "at the top of benches/compare.py."
    )
    out.emit()


if __name__ == "__main__":
    sys.exit(main())
