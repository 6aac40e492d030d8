#!/usr/bin/env python3
"""A whole triage of each corpus dump, cold handle, beside drgn (issue 10's bench).

    python3 benches/triage.py [--runs N] [--vmlinux-dbg PATH]

kvm_rs: `Kvm(CORE_SYMBOLS, dump)`, `.triage()` (tasks, modules, the system facts, the
kernel log's panic line, all from BTF and the dump's kallsyms: no debug info), `.stack()`
(the crashed CPU's backtrace, ORC), `.close()`; each run a new handle. Two columns:
- "first of its build": the build cache emptied before each run (`clear_build_cache`), as
  for the first dump of a kernel build a process sees: everything decoded from the dump;
- "next of its build": the build cache holding this kernel's kallsyms names and BTF, as
  for every later dump of the build in a pipeline: the dump's own symbol values, tasks,
  stacks and facts are still read from it.

drgn 0.3.0 (PyPI) with DWARF: `Program()`, `set_core_dump(dump)`, the kernel's DWARF vmlinux
(`--vmlinux-dbg`, from the kernel's -dbg package), then the first type lookup (which
indexes the DWARF), `for_each_task` and `crashed_thread().stack_trace()`. drgn refuses a
vmlinux of another build; given one (the bench machine's registry has no -dbg package of
the corpus's 6.1.0-56 build, only other 6.1 builds of the same size), the bench forces it
(`Module.try_file(force=True)`) and times open + DWARF indexing alone, since a walk with
another build's addresses cannot be right: a lower bound of what drgn pays. Without any
DWARF vmlinux the table gives drgn's open alone. Medians of N runs, page cache warm, GC off.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import _common as c
import kvm_rs

TARGET_MS = 50.0
TARGET_RATIO = 20.0


def kvm_triage(dump: Path) -> Any:
    def run(_: object) -> None:
        with kvm_rs.Kvm(execfile=kvm_rs.CORE_SYMBOLS, corefile=str(dump)) as kd:
            report = kd.triage()
            frames = kd.stack()
            if report.panic_message is None or not frames:
                raise RuntimeError(f"{dump}: no triage")

    return run


def clear_build_cache() -> None:
    kvm_rs.clear_build_cache()


def drgn_run(dump: Path, vmlinux: Path | None) -> tuple[Any, str]:
    """drgn's run on `dump`, and what it does ("open only", "DWARF + tasks + stack",
    "open + DWARF index (another build, forced)")."""
    import drgn
    from drgn.helpers.linux.pid import for_each_task

    if vmlinux is None:

        def open_only(_: object) -> None:
            prog = drgn.Program()
            prog.set_core_dump(str(dump))

        return open_only, "open only"

    probe = drgn.Program()
    probe.set_core_dump(str(dump))
    probe.load_debug_info([str(vmlinux)])
    try:
        matches = probe.main_module().debug_file_status != drgn.ModuleFileStatus.WANT
    except LookupError:
        matches = False

    def run(_: object) -> None:
        prog = drgn.Program()
        prog.set_core_dump(str(dump))
        if matches:
            prog.load_debug_info([str(vmlinux)])
        else:
            prog.main_module(name="kernel", create=True).try_file(str(vmlinux), force=True)
        prog.type("struct task_struct")
        if matches:
            sum(1 for _ in for_each_task(prog))
            prog.crashed_thread().stack_trace()

    what = "DWARF + tasks + stack" if matches else "open + DWARF index, another build"
    return run, what


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--vmlinux-dbg", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    drgn_what = "open only"
    for dump in c.load_dumps(c.corpus_dir()):
        first = c.measure(kvm_triage(dump.path), args.runs, setup=clear_build_cache)
        kvm_rs.clear_build_cache()
        nxt = c.measure(kvm_triage(dump.path), args.runs)
        try:
            run, drgn_what = drgn_run(dump.path, args.vmlinux_dbg)
            peer = c.measure(run, max(3, args.runs // 4), warmup=1)
            peer_cell = c.fmt_ns(peer.median)
            ratios = (
                f"{c.fmt_ratio(peer.median, first.median)} / {c.fmt_ratio(peer.median, nxt.median)}"
            )
        except Exception as error:  # a peer that fails is reported, not skipped
            peer_cell, ratios = f"fails: {type(error).__name__}", "-"

        def cell(stats: c.Stats) -> str:
            return f"{c.fmt_ns(stats.median)} {'✓' if stats.median / 1e6 < TARGET_MS else '✗'}"

        rows.append([dump.name, cell(first), cell(nxt), peer_cell, ratios])
    headers = [
        "dump",
        "kvm_rs, first of its build",
        "kvm_rs, next of its build",
        f"drgn ({drgn_what})",
        "drgn / kvm_rs (first / next)",
    ]
    print(c.markdown_table(headers, rows))
    print(f"\ntarget: a whole triage under {TARGET_MS:g} ms (✓) and >= {TARGET_RATIO:g}x drgn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
