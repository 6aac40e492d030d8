"""Where releasing the GIL around `Kvm.read` pays: a warm read of N bytes (median), and how
two Python threads reading at once scale against one, for small and large reads.

Reads of at least 64 KiB run detached (rust/src/bindings/handle.rs, DETACH_READ_BYTES):
detaching costs a fixed ~0.1 us, noise next to a 64 KiB copy, but a large share of the
few hundred nanoseconds an 8-byte read takes. Two threads doing large reads should come
close to 2x; small reads stay serialized by the interpreter either way.

    python3 benches/read_gil.py [--quick]
"""

from __future__ import annotations

import threading
import time

import _common as c
import kvm_rs

DUMP = "boot-nokaslr.qemu-elf.vmcore"
SIZES = (8, 4096, 16384, 65536, 262144, 1 << 20)


def threaded_rate(kd: kvm_rs.Kvm, addr: int, size: int, threads: int, seconds: float) -> float:
    """Reads per second, all threads together."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(slot: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            kd.read(addr, size)
            n += 1
        counts[slot] = n

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / seconds


def main() -> int:
    args = c.arg_parser(__doc__ or "").parse_args()
    out = c.Output()
    folder = c.corpus_dir()
    runs = 200 if args.quick else 2000
    seconds = 0.5 if args.quick else 2.0
    c.emit_header("read: GIL release threshold", out, [], [f"dump: {DUMP}"])
    with kvm_rs.Kvm(folder / c.EXEC_FILES[0], folder / DUMP) as kd:
        # The direct map holds all of RAM: big reads stay inside mapped memory.
        base = int.from_bytes(
            kd.read(kd.nlist(["page_offset_base"])["page_offset_base"], 8), "little"
        )
        addr = base + (16 << 20)
        rows = []
        for size in SIZES:
            stats = c.measure(lambda _, n=size: kd.read(addr, n), runs)
            one = threaded_rate(kd, addr, size, 1, seconds)
            two = threaded_rate(kd, addr, size, 2, seconds)
            detached = "yes" if size >= 65536 else "no"
            rows.append((size, detached, stats.fmt(), f"{two / one:.2f}x"))
        c.print_table(["bytes", "detached", "warm read", "2 threads / 1 thread"], rows, out)
    out.save(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
