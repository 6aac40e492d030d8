#!/usr/bin/env python3
"""How soon `kvm-rs scan --json` prints its first report, against its whole run (SPEC 15:
reports stream as each dump is done; a killed scan keeps what it printed).

    python3 benches/scan_stream.py [--files N] [--runs N] [--threads N]

Writes N small files (4 KiB, an ELF magic then junk: each fails fast, as most of a folder of
leftovers does) to a temporary folder, plus the corpus dumps when they are unpacked, runs
the console script over them and reads its stdout as it comes: the time to the first line,
the time to the last, and their ratio. The issue's bound is a first line before 20 % of the
total. There is no peer: no other tool streams a scan of many dumps.
"""

from __future__ import annotations

import argparse
import shutil
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
    script = shutil.which("kvm-rs")
    base = [script] if script else [sys.executable, "-m", "kvm_rs"]
    with tempfile.TemporaryDirectory(prefix="kvm-rs-scan-stream-") as tmp:
        paths = small_files(Path(tmp), args.files)
        try:
            paths += [str(dump.path) for dump in c.load_dumps(c.corpus_dir())]
        except (OSError, SystemExit):
            pass  # the small files alone still show the streaming
        threads = ["--threads", str(args.threads)] if args.threads else []
        command = [*base, "scan", "--json", *threads, *paths]
        runs = [one_run(command) for _ in range(args.runs)]
    firsts = [first for first, _, _ in runs]
    totals = [total for _, total, _ in runs]
    ratios = [first / total for first, total, _ in runs]
    print(f"{len(paths)} files, {args.runs} runs, lines per run: {runs[0][2]}")
    print(f"first report line: median {statistics.median(firsts) * 1000:.1f} ms")
    print(f"whole scan:        median {statistics.median(totals) * 1000:.1f} ms")
    print(
        f"first / whole:     median {statistics.median(ratios):.1%} "
        f"(min {min(ratios):.1%}, max {max(ratios):.1%}; bound 20 %)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
