#!/usr/bin/env python3
"""A whole triage of each corpus dump, cold handle, beside drgn (issue 10's bench).

    python3 benches/triage.py [--runs N] [--vmlinux-dbg PATH]

kvm_rs: `Kvm(CORE_SYMBOLS, dump)`, `.triage()` (tasks, modules, the system facts, the
kernel log's panic line, all from BTF and the dump's kallsyms: no debug info), `.stack()`
(the crashed CPU's backtrace, ORC), `.close()`; each run a new handle.

drgn 0.3.0 (PyPI) doing the same where it can: `Program()`, `set_core_dump(dump)`, then with
a DWARF vmlinux (`--vmlinux-dbg`, from the kernel's -dbg package) `load_debug_info`,
`for_each_task`, `crashed_thread().stack_trace()`. Without one (this machine has no
linux-image-*-dbg), drgn cannot do a triage at all; the table gives its open alone, which
is a lower bound of what it would cost. Medians of N runs, page cache warm, GC off.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import _common as c
import kvm_rs

TARGET_MS = 50.0


def kvm_triage(dump: Path) -> Any:
    def run(_: object) -> None:
        with kvm_rs.Kvm(execfile=kvm_rs.CORE_SYMBOLS, corefile=str(dump)) as kd:
            report = kd.triage()
            frames = kd.stack()
            if report.panic_message is None or not frames:
                raise RuntimeError(f"{dump}: no triage")

    return run


def drgn_run(dump: Path, vmlinux: Path | None) -> Any:
    import drgn
    from drgn.helpers.linux.pid import for_each_task

    def run(_: object) -> None:
        prog = drgn.Program()
        prog.set_core_dump(str(dump))
        if vmlinux is not None:
            prog.load_debug_info([str(vmlinux)])
            sum(1 for _ in for_each_task(prog))
            prog.crashed_thread().stack_trace()

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--vmlinux-dbg", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for dump in c.load_dumps(c.corpus_dir()):
        ours = c.measure(kvm_triage(dump.path), args.runs)
        try:
            peer = c.measure(drgn_run(dump.path, args.vmlinux_dbg), args.runs)
            peer_cell = c.fmt_ns(peer.median)
            ratio = c.fmt_ratio(peer.median, ours.median)
        except Exception as error:  # a peer that fails is reported, not skipped
            peer_cell, ratio = f"fails: {type(error).__name__}", "-"
        within = "✓" if ours.median / 1e6 < TARGET_MS else "✗"
        rows.append([dump.name, f"{c.fmt_ns(ours.median)} {within}", peer_cell, ratio])
    what = "open + DWARF + tasks + crashed stack" if args.vmlinux_dbg else "open only"
    headers = ["dump", "kvm_rs triage + stack", f"drgn ({what})", "drgn / kvm_rs"]
    print(c.markdown_table(headers, rows))
    print(f"\ntarget: a whole triage under {TARGET_MS:g} ms (✓)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
