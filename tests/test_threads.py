"""One handle, many threads, and a close in the middle (SPEC §3, §9).

Eight threads read random truth symbols (64 bytes each, compared with truth.json) from one
handle while a ninth closes it after a short delay. Every read either returns the truth
bytes or fails with `kvm handle is closed`; after the close every read fails that way
(`Kvm.read` raises KvmError, `kvm_rs.read` returns -1); no descriptor is left open.

A crash or a hang must not take the test session down with it, so each race runs in a
child process (this file run as a script) that arms faulthandler: a child that hangs dumps
every thread's stack and exits. Several children race at once, each a fresh interpreter
whose first kvm error is the one the race produces.
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

CLOSED = "kvm handle is closed"
READERS = 8
DUMPS = ["boot-nokaslr.mdf-d31-zlib.kdump", "boot-nokaslr.qemu-elf-paging.vmcore"]
CHILDREN = 3  # races per dump, run in parallel
CHILD_HANG = 10.0  # seconds: a child still running then has hung (faulthandler exits it)
READ_DEADLINE = 5.0  # seconds a reader keeps reading without seeing the close
AFTER_CLOSE_READS = 2000  # reads of the closed handle per reader, still racing each other


# -- the child: one race ---------------------------------------------------------------------


def race(system_map: str, dump: str, truth: dict[str, Any]) -> dict[str, Any]:
    import kvm_rs

    fds_before = len(os.listdir("/proc/self/fd"))
    kd = kvm_rs.Kvm(system_map, dump)
    found = kd.nlist(list(truth))
    targets = [(found[name], bytes.fromhex(facts["bytes"])) for name, facts in truth.items()]
    start = threading.Barrier(READERS + 1)
    problems: list[str] = []
    good_reads = [0] * READERS
    lock = threading.Lock()

    def report(text: str) -> None:
        with lock:
            problems.append(text)

    def after_close(index: int, addr: int) -> None:
        for _ in range(AFTER_CLOSE_READS):
            if kvm_rs.read(kd, addr, bytearray(64)) != -1:
                report(f"reader {index}: kvm_rs.read succeeded after close")
            try:
                kd.read(addr, 64)
            except kvm_rs.KvmError as error:
                if str(error) != CLOSED:
                    report(f"reader {index}: after close: {error}")
            else:
                report(f"reader {index}: Kvm.read succeeded after close")

    def reader(index: int) -> None:
        rng = random.Random(index)
        c_style = index % 2 == 1  # half use kvm_rs.read, half Kvm.read
        start.wait()
        limit = time.monotonic() + READ_DEADLINE
        while time.monotonic() < limit:
            addr, expected = rng.choice(targets)
            if c_style:
                buf = bytearray(64)
                rc = kvm_rs.read(kd, addr, buf)
                if rc == 64:
                    if bytes(buf) != expected:
                        report(f"reader {index}: wrong bytes at {addr:#x}")
                    good_reads[index] += 1
                    continue
                if rc != -1 or not kd.closed:
                    report(f"reader {index}: kvm_rs.read returned {rc} on an open handle")
                    return
            else:
                try:
                    data = kd.read(addr, 64)
                except kvm_rs.KvmError as error:
                    if str(error) != CLOSED:
                        report(f"reader {index}: {error}")
                        return
                else:
                    if data != expected:
                        report(f"reader {index}: wrong bytes at {addr:#x}")
                    good_reads[index] += 1
                    continue
            after_close(index, addr)
            return
        report(f"reader {index}: never saw the handle closed")

    def closer() -> None:
        start.wait()
        time.sleep(0.02)
        kd.close()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    threads.append(threading.Thread(target=closer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # After the close, from the main thread too.
    addr = targets[0][0]
    if not kd.closed:
        problems.append("handle not closed")
    try:
        kd.read(addr, 64)
        problems.append("Kvm.read succeeded after close")
    except kvm_rs.KvmError as error:
        if str(error) != CLOSED:
            problems.append(f"after close: {error}")
    if kvm_rs.read(kd, addr, bytearray(64)) != -1:
        problems.append("kvm_rs.read succeeded after close")
    if kvm_rs.geterr(kd) != CLOSED:
        problems.append(f"geterr after close: {kvm_rs.geterr(kd)!r}")
    kd.close()  # idempotent
    if kvm_rs.close(kd) != -1:
        problems.append("kvm_rs.close of a closed handle is not -1")
    fds_after = len(os.listdir("/proc/self/fd"))
    if fds_after != fds_before:
        problems.append(f"descriptors: {fds_before} before, {fds_after} after")
    return {"problems": problems, "good_reads": sum(good_reads)}


def child_main(argv: list[str]) -> int:
    system_map, dump, truth_json, dump_name = argv
    faulthandler.dump_traceback_later(CHILD_HANG - 3, exit=True)
    truth = json.loads(Path(truth_json).read_text())["dumps"][dump_name]["symbols"]
    result = race(system_map, dump, truth)
    print(json.dumps(result))
    return 0


# -- the tests -------------------------------------------------------------------------------


def run_races(corpus: Any, dump: str) -> list[tuple[int | None, str, str]]:
    """Runs CHILDREN races at once; (returncode or None if killed, stdout, stderr) each."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        str(corpus.system_map),
        str(corpus.dump(dump)),
        str(corpus.dir / "truth.json"),
        dump,
    ]
    children = [
        subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(CHILDREN)
    ]
    results: list[tuple[int | None, str, str]] = []
    deadline = time.monotonic() + CHILD_HANG
    for child in children:
        try:
            out, err = child.communicate(timeout=max(0.1, deadline - time.monotonic()))
            results.append((child.returncode, out, err))
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            results.append((None, out, err))
    return results


@pytest.mark.parametrize("dump", DUMPS)
def test_reads_racing_close(corpus: Any, dump: str) -> None:
    outcomes = run_races(corpus, dump)
    failures = []
    good = 0
    for index, (code, out, err) in enumerate(outcomes):
        if code != 0:
            what = "hung (killed)" if code is None else f"exited {code}"
            if "Timeout" in err:
                what = "hung (faulthandler dump follows)"
            failures.append(f"race {index} {what}:\n{err[-6000:]}")
            continue
        result = json.loads(out.strip().splitlines()[-1])
        if result["problems"]:
            failures.append(f"race {index}: " + "; ".join(result["problems"]))
        good += result["good_reads"]
    assert not failures, f"{len(failures)} of {len(outcomes)} races failed:\n" + "\n".join(failures)
    assert good > 0, "no read completed before a close: no race was tested"


def test_reads_after_close(corpus: Any) -> None:
    """Single-threaded, in this process: a closed handle refuses every read."""
    import kvm_rs

    kd = kvm_rs.Kvm(str(corpus.system_map), str(corpus.dump(DUMPS[0])))
    jiffies = kd.nlist(["jiffies"])["jiffies"]
    assert len(kd.read(jiffies, 64)) == 64
    kd.close()
    assert kd.closed
    with pytest.raises(kvm_rs.KvmError) as raised:
        kd.read(jiffies, 64)
    assert str(raised.value) == CLOSED
    assert kvm_rs.read(kd, jiffies, bytearray(64)) == -1
    assert kvm_rs.geterr(kd) == CLOSED
    assert kvm_rs.close(kd) == -1


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
