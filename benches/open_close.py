#!/usr/bin/env python3
"""Open + close latency of kvm_rs on every corpus dump, beside drgn and libkdumpfile.

    python3 benches/open_close.py [--quick] [--runs N] [--out FILE] [--no-peers]

Every cell is the median of N timed runs after warm-ups (page cache warm, GC off).

kvm_rs (each dump with System.map-6.1.0-56-amd64 and with vmlinux-6.1.0-56-amd64.stripped):
`kvm_rs.Kvm(execfile, corefile)` then `.close()`, two ways, because kvm_rs keeps parsed exec
files per process (rust/src/symbols/cache.rs):

- "parse": the exec file is not in that cache (it is named through a fresh
  /proc/self/fd/N each run), so the open reads and checks it: a one-off, or a new kernel.
- "cached": the same exec path again, as a pipeline opening many dumps of one build does.
- "core only": `execfile=kvm_rs.CORE_SYMBOLS` (no exec file; the dump's own kallsyms are
  decoded only when nlist asks), the like of the peers' cells.

Peers, core only, dropped after the open:
- drgn: `prog = drgn.Program(); prog.set_core_dump(path)`.
- libkdumpfile: `kdumpfile(path)`, `attr['addrxlat.ostype'] = 'linux'` (needed before a
  kernel-virtual read).

kvm_rs builds its symbol index lazily, so a last table adds the first `nlist` to the cycle.
Nothing is written to disk unless --out is given.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common as c
import kvm_rs


def kvm_open_close(execfile: Any, corefile: Path) -> Callable[[Any], object]:
    """Opens with `execfile`, or with the name `setup` passed in when execfile is None."""
    core = str(corefile)

    def run(name: Any) -> None:
        kvm_rs.Kvm(execfile=execfile if name is None else name, corefile=core).close()

    return run


def kvm_open_nlist_close(execfile: Any, corefile: Path) -> Callable[[Any], object]:
    core = str(corefile)

    def run(name: Any) -> None:
        handle = kvm_rs.Kvm(execfile=execfile if name is None else name, corefile=core)
        try:
            if "linux_banner" not in handle.nlist(["linux_banner"]):
                raise RuntimeError("nlist: linux_banner not found")
        finally:
            handle.close()

    return run


def main() -> int:
    args = c.arg_parser(__doc__.splitlines()[1]).parse_args()
    runs = args.runs or (5 if args.quick else 30)
    warmup = 1 if args.quick else 2
    folder = c.corpus_dir()
    dumps = c.load_dumps(folder)

    no = "skipped (--no-peers)"
    drgn = c.Peer("drgn", None, None, no) if args.no_peers else c.load_drgn()
    lkf = c.Peer("libkdumpfile", None, None, no) if args.no_peers else c.load_kdumpfile()
    have_drgn, have_lkf = drgn.module is not None, lkf.module is not None

    out = c.Output()
    c.emit_header(
        "open + close",
        out,
        [drgn, lkf],
        [
            f"corpus: {folder} ({len(dumps)} dumps)",
            f"median of {runs} runs after {warmup} warm-up(s); page cache warm; GC off",
            "parse = exec file not in kvm_rs's per-process cache (fresh /proc/self/fd/N name)",
            "cached = same exec path again (kvm_rs reuses the parsed exec file)",
            "core only = kvm_rs execfile=CORE_SYMBOLS; drgn/libkdumpfile read no exec file",
        ],
    )

    execs = {label: folder / name for name, label in c.EXEC_LABELS.items()}
    fresh = {label: c.FreshNames(path) for label, path in execs.items()}
    variants: list[tuple[str, Any, c.Setup]] = []
    for label, path in execs.items():
        variants.append((f"+{label} parse", None, fresh[label].next))
        variants.append((f"+{label} cached", str(path), None))
    variants.append(("core only", kvm_rs.CORE_SYMBOLS, None))

    results: dict[str, dict[str, c.Cell]] = {}
    for dump in dumps:
        print(f"... {dump.name}", file=sys.stderr, flush=True)
        row: dict[str, c.Cell] = {}
        for key, execfile, setup in variants:
            row[key] = c.bench(kvm_open_close(execfile, dump.path), setup, runs, warmup)
        core = str(dump.path)
        if have_drgn:
            reader = c.drgn_reader(drgn.module, core)
            row["drgn"] = c.bench(c.open_close(reader), None, runs, warmup)
        if have_lkf:
            reader = c.kdumpfile_reader(lkf.module, core)
            row["libkdumpfile"] = c.bench(c.open_close(reader), None, runs, warmup)
        for key, execfile, setup in variants[:4]:
            run = kvm_open_nlist_close(execfile, dump.path)
            row[f"nlist {key}"] = c.bench(run, setup, runs, warmup)
        results[dump.name] = row
    for names in fresh.values():
        names.close()

    out.emit("### Open + close: kvm_rs median [min .. max]; peer / kvm_rs > 1x: kvm_rs faster")
    out.emit()
    headers = ["dump", "format", "kvm_rs", "kvm_rs open+close", "drgn (core only)"]
    headers += ["drgn / kvm_rs", "libkdumpfile (core only)", "lkf / kvm_rs"]
    rows = []
    for dump in dumps:
        row = results[dump.name]
        d_cell, l_cell = row.get("drgn", c.MISSING), row.get("libkdumpfile", c.MISSING)
        for key, _, _ in variants:
            ours = c.cell_median(row[key])
            rows.append(
                [
                    c.short_name(dump.name),
                    dump.format,
                    key,
                    c.show(row[key], spread=True),
                    c.show(d_cell, available=have_drgn),
                    c.fmt_ratio(c.cell_median(d_cell), ours),
                    c.show(l_cell, available=have_lkf),
                    c.fmt_ratio(c.cell_median(l_cell), ours),
                ]
            )
    c.print_table(headers, rows, out)
    out.emit()

    out.emit("### Peers, core only: median [min .. max]")
    out.emit()
    rows = [
        [
            c.short_name(dump.name),
            c.show(results[dump.name].get("drgn", c.MISSING), spread=True, available=have_drgn),
            c.show(
                results[dump.name].get("libkdumpfile", c.MISSING), spread=True, available=have_lkf
            ),
        ]
        for dump in dumps
    ]
    c.print_table(["dump", "drgn", "libkdumpfile"], rows, out)
    out.emit()

    out.emit("### kvm_rs open + first nlist(['linux_banner']) + close: median [min .. max]")
    out.emit()
    keys = [key for key, _, _ in variants[:4]]
    rows = [
        [c.short_name(dump.name), *(c.show(results[dump.name][f"nlist {k}"], True) for k in keys)]
        for dump in dumps
    ]
    c.print_table(["dump", *keys], rows, out)

    failures = [
        f"- {c.short_name(dump)} / {key}: {cell[1]}"
        for dump, row in results.items()
        for key, cell in row.items()
        if cell[1] is not None
    ]
    if failures:
        out.emit()
        out.emit("FAIL details:")
        out.emit()
        for line in failures:
            out.emit(line)
    out.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
