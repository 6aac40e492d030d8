#!/usr/bin/env python3
"""Read latency of kvm_rs on every corpus dump, beside drgn and libkdumpfile.

    python3 benches/read.py [--quick] [--runs N] [--reads N] [--out FILE] [--no-peers]

1. A 4 KiB read at linux_banner (its runtime address from truth.json, so KASLR needs no
   symbols) on N fresh handles (after warm-ups), timed three ways per handle:
   cold = the handle's first read; warm = the same read again; open + cold = the open too.
   kvm_rs opens with System.map or the stripped vmlinux (already in kvm_rs's per-process
   exec-file cache after the warm-ups; see open_close.py for the first-parse cost) or with
   CORE_SYMBOLS ("core only"); drgn is `Program()` + `set_core_dump(path)` + `read(addr,
   4096)`; libkdumpfile is `kdumpfile(path)`, `attr['addrxlat.ostype'] = 'linux'`,
   `read(KDUMP_KVADDR, addr, 4096)`.
2. 10,000 8-byte reads at the 29 truth symbols' runtime addresses, in a seeded random order,
   on a freshly opened handle (open untimed), median over a few repetitions. "native per
   read" calls the private native method under `Kvm.read`: the gap is the Python wrapper.

Every reader's bytes are checked against truth.json once per dump before timing; a reader
that cannot open a dump or reads wrong bytes shows FAIL. Nothing is written to disk unless
--out is given.
"""

from __future__ import annotations

import sys

import _common as c
import kvm_rs

BASE = "kvm_rs +System.map"


def native_reader(reader: c.Reader) -> c.Reader:
    """The same kvm_rs handle, read through the native method `Kvm.read` wraps (private;
    returns (bytes, error)): the difference is the Python wrapper's cost per call."""
    return c.Reader(
        name=f"{reader.name} native",
        open=reader.open,
        read=lambda h, addr, size: h._session.read(addr, size)[0],
        close=reader.close,
        bind=lambda h: h._session.read,
    )


def main() -> int:
    parser = c.arg_parser(__doc__.splitlines()[1])
    parser.add_argument("--reads", type=int, default=10_000, help="8-byte reads per batch")
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 30)
    warmup = 1 if args.quick else 2
    word_reps = 1 if args.quick else 5
    folder = c.corpus_dir()
    dumps = c.load_dumps(folder)

    no = "skipped (--no-peers)"
    drgn = c.Peer("drgn", None, None, no) if args.no_peers else c.load_drgn()
    lkf = c.Peer("libkdumpfile", None, None, no) if args.no_peers else c.load_kdumpfile()

    out = c.Output()
    c.emit_header(
        "read",
        out,
        [drgn, lkf],
        [
            f"corpus: {folder} ({len(dumps)} dumps)",
            f"4 KiB at linux_banner: median of {runs} fresh handles after {warmup} warm-up(s)",
            f"random reads: {args.reads:,} x 8 bytes at the truth symbols (seed {c.SEED}), "
            f"median of {word_reps} fresh handle(s) after {warmup} warm-up(s)",
            "page cache warm; GC off; kvm_rs exec file already parsed (per-process cache)",
            "native per read: kvm_rs's private `Kvm._session.read` (no Python wrapper)",
        ],
    )

    exec_paths = {label: str(folder / name) for name, label in c.EXEC_LABELS.items()}
    block: dict[str, dict[str, c.BlockResult]] = {}
    words: dict[str, dict[str, c.Cell]] = {}
    failures: list[str] = []
    order: list[str] = []
    for dump in dumps:
        print(f"... {dump.name}", file=sys.stderr, flush=True)
        core = str(dump.path)
        readers = [c.kvm_reader(f"+{label}", path, core) for label, path in exec_paths.items()]
        readers.append(c.kvm_reader("core only", kvm_rs.CORE_SYMBOLS, core))
        if drgn.module is not None:
            readers.append(c.drgn_reader(drgn.module, core))
        if lkf.module is not None:
            readers.append(c.kdumpfile_reader(lkf.module, core))
        addrs = c.random_addrs(dump, args.reads)
        block[dump.name] = {}
        words[dump.name] = {}
        for reader in readers:
            if reader.name not in order:
                order.append(reader.name)
            failure = c.verify(reader, dump)
            if failure is not None:
                failures.append(f"- {c.short_name(dump.name)} / {reader.name}: {failure}")
                fail: c.Cell = (None, failure)
                block[dump.name][reader.name] = c.BlockResult.failed(fail)
                words[dump.name][reader.name] = fail
                continue
            block[dump.name][reader.name] = c.bench_block(reader, dump.banner, runs, warmup)
            if reader.name in (BASE, "drgn", "libkdumpfile"):
                words[dump.name][reader.name] = c.bench_words(reader, addrs, word_reps, warmup)
            if reader.name == BASE:
                native = native_reader(reader)
                words[dump.name][native.name] = c.bench_words(native, addrs, word_reps, warmup)

    available = {"drgn": drgn.module is not None, "libkdumpfile": lkf.module is not None}

    out.emit(f"### 4 KiB read at linux_banner (ratios: row / {BASE}; > 1x: kvm_rs faster)")
    out.emit()
    headers = ["dump", "reader", "cold read", "warm read", "open + cold read"]
    headers += ["cold ratio", "warm ratio", "open+cold ratio"]
    rows = []
    for dump in dumps:
        results = block[dump.name]
        ours = results[BASE]
        for name in order:
            have = available.get(name, True)
            result = results.get(name)
            if result is None:
                result = c.BlockResult.failed(c.MISSING)
            rows.append(
                [
                    c.short_name(dump.name),
                    name,
                    c.show(result.cold, available=have),
                    c.show(result.warm, available=have),
                    c.show(result.open_cold, available=have),
                    c.fmt_ratio(c.cell_median(result.cold), c.cell_median(ours.cold)),
                    c.fmt_ratio(c.cell_median(result.warm), c.cell_median(ours.warm)),
                    c.fmt_ratio(c.cell_median(result.open_cold), c.cell_median(ours.open_cold)),
                ]
            )
    c.print_table(headers, rows, out)
    out.emit()

    out.emit("### Detail: cold 4 KiB read, median [min .. max]")
    out.emit()
    rows = [
        [
            c.short_name(dump.name),
            *(
                c.show(
                    block[dump.name][name].cold if name in block[dump.name] else c.MISSING,
                    spread=True,
                    available=available.get(name, True),
                )
                for name in order
            ),
        ]
        for dump in dumps
    ]
    c.print_table(["dump", *order], rows, out)
    out.emit()

    out.emit(f"### {args.reads:,} random 8-byte reads at truth symbols (total; per read)")
    out.emit()
    peers = [name for name in ("drgn", "libkdumpfile") if name in order]
    native = f"{BASE} native"
    headers = ["dump", f"{BASE} total", "per read", "native per read"]
    for name in peers:
        headers += [f"{name} total", "per read", f"{name} / kvm_rs"]
    rows = []
    for dump in dumps:
        ours = words[dump.name].get(BASE, c.MISSING)
        row = [c.short_name(dump.name), c.show(ours), per_read(ours, args.reads)]
        row.append(per_read(words[dump.name].get(native, c.MISSING), args.reads))
        for name in peers:
            cell = words[dump.name].get(name, c.MISSING)
            row += [
                c.show(cell, available=available[name]),
                per_read(cell, args.reads),
                c.fmt_ratio(c.cell_median(cell), c.cell_median(ours)),
            ]
        rows.append(row)
    c.print_table(headers, rows, out)

    if failures:
        out.emit()
        out.emit("FAIL details:")
        out.emit()
        for line in failures:
            out.emit(line)
    out.save(args.out)
    return 0


def per_read(cell: c.Cell, reads: int) -> str:
    total = c.cell_median(cell)
    return "-" if total is None else c.fmt_ns(total / reads)


if __name__ == "__main__":
    sys.exit(main())
