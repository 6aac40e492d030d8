#!/usr/bin/env python3
"""How soon `kvm-rs scan --json` prints its first report, against its whole run (SPEC 15:
reports stream as each dump is done; a killed scan keeps what it printed).

    python3 benches/scan_stream.py [--files N] [--runs N] [--threads N]

Two folders of N files each, in a temporary folder: small junk files (4 KiB, an ELF magic
then junk: each fails in microseconds, as leftovers do) and links to one small real dump
(the corpus's zlib kdump: each opens, reads its release through the page tables and
decodes its log), each with the corpus dumps beside them. It runs the console script
(the one beside this interpreter) over each and reads its stdout as it comes: the time to
the first line, the time to the last, and their ratio. The issue's bound is a first line
before 20 % of the total. There is no peer: no other tool streams a scan of many dumps.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c


def small_files(folder: Path, count: int) -> list[str]:
    paths = []
    for index in range(count):
        path = folder / f"vmcore.{index:05d}"
        path.write_bytes(b"\x7fELF" + bytes([index % 256]) * 4092)
        paths.append(str(path))
    return paths


def linked_dumps(folder: Path, count: int, dump: Path) -> list[str]:
    paths = []
    for index in range(count):
        path = folder / f"vmcore.{index:05d}"
        path.symlink_to(dump)
        paths.append(str(path))
    return paths


def one_run(command: list[str]) -> tuple[float, float, int]:
    """(seconds to the first line, seconds to the end, lines)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    first = None
    lines = 0
    for _ in child.stdout:
        lines += 1
        if first is None:
            first = time.perf_counter() - started
    child.wait()
    total = time.perf_counter() - started
    return first if first is not None else total, total, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    # The console script beside this interpreter (a version manager's shim on PATH would
    # add its own start-up to every run).
    script = Path(sys.executable).parent / "kvm-rs"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "kvm_rs"]
    corpus = c.corpus_dir()
    dumps = [str(dump.path) for dump in c.load_dumps(corpus)]
    threads = ["--threads", str(args.threads)] if args.threads else []
    with tempfile.TemporaryDirectory(prefix="kvm-rs-scan-stream-") as tmp:
        (Path(tmp) / "junk").mkdir()
        (Path(tmp) / "real").mkdir()
        cases = {
            "junk files": small_files(Path(tmp) / "junk", args.files),
            "links to a small kdump": linked_dumps(
                Path(tmp) / "real", args.files, corpus / "boot-nokaslr.mdf-d31-zlib.kdump"
            ),
        }
        for case, paths in cases.items():
            command = [*base, "scan", "--json", *threads, *paths, *dumps]
            runs = [one_run(command) for _ in range(args.runs)]
            firsts = [first for first, _, _ in runs]
            totals = [total for _, total, _ in runs]
            ratios = [first / total for first, total, _ in runs]
            print(f"{case}: {len(paths) + len(dumps)} files, {args.runs} runs")
            print(f"  first report line: median {statistics.median(firsts) * 1000:.1f} ms")
            print(f"  whole scan:        median {statistics.median(totals) * 1000:.1f} ms")
            print(
                f"  first / whole:     median {statistics.median(ratios):.1%} "
                f"(min {min(ratios):.1%}, max {max(ratios):.1%}; bound 20 %)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
