"""Hostile inputs of the issue, one regression test each (SPEC §9: no input may crash the
process, hang, allocate without bound, or change a file it must not).

Each test builds its file (tests/hostile.py) and runs the kvm_rs call in a child process
limited to 1 GiB of address space (RLIMIT_AS) and 5 seconds (the memory-growth test: 60 s,
the Ctrl-C test: 5 s after the signal), so an abort, a hang or a runaway allocation fails
one test instead of the session. The child prints its outcome as one JSON line and exits 0;
a crash, a MemoryError or a PanicException (a BaseException: never caught here) makes it
exit otherwise. The parent asserts the outcome: the message where the issue fixes it, else
its stable part (`<core>: invalid core: kallsyms tables: ...`).
"""

from __future__ import annotations

import errno
import json
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import elfwriter
import hostile
import pytest
import synthetic
from hostile import U64_MAX, Ring

if TYPE_CHECKING:
    from conftest import Corpus

TESTS = Path(__file__).resolve().parent
ADDRESS_SPACE = 1 << 30
TIMEOUT = 5.0
#: Opens of the memory-growth test, and how much RSS may grow between the 10th and the last.
GROWTH_DUMPS = 1000
GROWTH_NAMES = 2000
GROWTH_SLACK = 16 << 20
GROWTH_TIMEOUT = 60.0
#: The Ctrl-C test: paths scanned, when the signal goes, how soon it must take effect.
SCAN_PATHS = 10_000
SIGINT_AFTER = 1.0
SIGINT_GRACE = 1.0
#: How long a call that must refuse hostile input at once may take (it takes milliseconds).
QUICK = 2.0
SCAN_DUMPS = [
    "boot-nokaslr.qemu-elf-paging.vmcore",
    "boot-nokaslr.qemu-kdump-zlib.vmcore",
    "boot-nokaslr.mdf-d31-zlib.kdump",
]
BANNER_DUMP = "boot-nokaslr.qemu-elf.vmcore"

#: Every child starts with this: its imports, and how it reports.
PRELUDE = f"""
import json, os, sys, time
sys.path.insert(0, {str(TESTS)!r})
import kvm_rs


def report(**outcome):
    print("OUTCOME " + json.dumps(outcome), flush=True)


def error(e):
    return {{
        "error": str(e),
        "kvm_error": isinstance(e, kvm_rs.KvmError),
        "type": type(e).__name__,
        "errno": getattr(e, "errno", None),
        "hard": getattr(e, "hard", None),
    }}
"""


def limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def child_command(script: str, *args: object) -> list[str]:
    return [sys.executable, "-c", PRELUDE + textwrap.dedent(script), *map(str, args)]


def exit_status(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited {code}"


def outcome_of(code: int, stdout: str, stderr: str) -> dict[str, Any]:
    assert code == 0, f"child {exit_status(code)}; stderr:\n{stderr[-4000:]}"
    lines = [line for line in stdout.splitlines() if line.startswith("OUTCOME ")]
    assert lines, f"child reported nothing; stdout:\n{stdout[-2000:]}\nstderr:\n{stderr[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("OUTCOME "))
    return result


def run_child(
    script: str, *args: object, timeout: float = TIMEOUT, cwd: Path | None = None
) -> dict[str, Any]:
    """Runs `script` (after PRELUDE) with `args` in a child limited to ADDRESS_SPACE and
    `timeout` seconds; returns what it reported."""
    try:
        run = subprocess.run(
            child_command(script, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=limit_address_space,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired:
        run = None
    if run is None:
        pytest.fail(f"child did not finish within {timeout:g} s (a hang)", pytrace=False)
    return outcome_of(run.returncode, run.stdout, run.stderr)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def sysmap(tmp_path: Path) -> Path:
    """The synthetic kernel's System.map."""
    return write(tmp_path / "System.map-test", elfwriter.system_map(synthetic.SYMBOLS))


def synthetic_core(tmp_path: Path) -> Path:
    """A small ELF core of the synthetic kernel (one PT_LOAD)."""
    return write(
        tmp_path / "synthetic.core",
        elfwriter.elf_core(
            synthetic.synthetic_vmcoreinfo(),
            [elfwriter.Load(hostile.KDATA, hostile.KDATA_PHYS, b"\xaa" * hostile.PAGE)],
        ),
    )


#: Opens exec + core (CORE_SYMBOLS for an exec of "core"); reports the error or "opened".
OPEN = """
exec_path = kvm_rs.CORE_SYMBOLS if sys.argv[1] == "core" else sys.argv[1]
try:
    kd = kvm_rs.Kvm(exec_path, sys.argv[2])
except kvm_rs.KvmError as e:
    report(**error(e))
else:
    report(opened=True, osrelease=kd.info.osrelease)
    kd.close()
"""


def assert_core_rejected(outcome: dict[str, Any], core: Path, *kinds: str) -> None:
    """A hard KvmError `<core>: <kind>: ...` for one of `kinds`."""
    assert "error" in outcome, f"no error: {outcome}"
    assert outcome["kvm_error"] and outcome["hard"], outcome
    prefixes = tuple(f"{core}: {kind}: " for kind in kinds)
    assert outcome["error"].startswith(prefixes), outcome["error"]


# -- 1. a flattened stream whose inner header claims a huge table -----------------------------


@pytest.mark.parametrize(
    "build",
    [hostile.flattened_kdump_terabyte_bitmap, hostile.flattened_elf_xnum],
    ids=["kdump-1TiB-bitmap", "elf-2^24-program-headers"],
)
def test_flattened_inner_header_claims_terabytes(tmp_path: Path, sysmap: Path, build) -> None:
    """Records far out make the re-assembled file look big enough for the header's claim (a
    1 TiB bitmap; 2^24 program headers through PN_XNUM); the stream holds a few KiB. Open
    must say so, not allocate what the header claims."""
    core = write(tmp_path / "hostile.flat", build())
    outcome = run_child(OPEN, sysmap, core)
    assert_core_rejected(outcome, core, "truncated core", "invalid core")


# -- 2. kallsyms tables whose decoding multiplies ---------------------------------------------


NLIST_X = """
with kvm_rs.Kvm(kvm_rs.CORE_SYMBOLS, sys.argv[1]) as kd:
    try:
        found = kd.nlist(["x"])
    except kvm_rs.KvmError as e:
        report(**error(e))
    else:
        report(found=found)
"""


def test_kallsyms_bomb_core_symbols(tmp_path: Path) -> None:
    """Token 0 is 65,791 bytes and the first name is 32,767 of it: `nlist` through the
    dump's own kallsyms ends in a clear error, quickly, in bounded memory."""
    core = write(tmp_path / "kallsyms-bomb.core", hostile.kallsyms_bomb_core())
    outcome = run_child(NLIST_X, core)
    assert_core_rejected(outcome, core, "invalid core")
    assert outcome["error"] == f"{core}: invalid core: kallsyms tables: a name of 32767 tokens"


def test_kallsyms_bomb_sampled_at_open(tmp_path: Path) -> None:
    """The same tables behind a thin exec file (a text-only kallsyms that shares nothing but
    `_stext` with VMCOREINFO): open decodes a sample of them (SPEC §6) and must fail as
    clearly."""
    core = write(tmp_path / "kallsyms-bomb.core", hostile.kallsyms_bomb_core())
    thin = write(tmp_path / "kallsyms-thin", hostile.thin_kallsyms())
    outcome = run_child(OPEN, thin, core)
    assert_core_rejected(outcome, core, "invalid core")
    assert outcome["error"] == f"{core}: invalid core: kallsyms tables: a name of 32767 tokens"


def test_kallsyms_thin_exec_opens_without_tables(tmp_path: Path) -> None:
    """Control: the thin kallsyms opens a dump whose VMCOREINFO names no kallsyms tables."""
    core = synthetic_core(tmp_path)
    thin = write(tmp_path / "kallsyms-thin", hostile.thin_kallsyms())
    outcome = run_child(OPEN, thin, core)
    assert outcome == {"opened": True, "osrelease": synthetic.TEST_RELEASE}


# -- 3 and 10. the printk ring ------------------------------------------------------------------

DMESG = """
with kvm_rs.Kvm(sys.argv[1], sys.argv[2]) as kd:
    started = time.monotonic()
    try:
        lines = kd.dmesg()
    except kvm_rs.KvmError as e:
        report(seconds=time.monotonic() - started, **error(e))
    else:
        report(seconds=time.monotonic() - started, lines=lines)
"""

SCAN = """
started = time.monotonic()
[found] = kvm_rs.scan([sys.argv[1]])
report(seconds=time.monotonic() - started, ok=found.ok, error=found.error, panic=found.panic)
"""


#: What the undamaged ring holds.
TRUE_LOG = ["[    1.500000] " + hostile.RECORD_TEXT.decode()]


def test_printk_ring_control(tmp_path: Path, sysmap: Path) -> None:
    """Control: the ring of tests/hostile.py, undamaged, holds its one record."""
    core = write(tmp_path / "printk.core", hostile.printk_core())
    assert run_child(DMESG, sysmap, core)["lines"] == TRUE_LOG


#: 2^31 descriptors of size 0 (and infos of size 0): the ring's byte count passes any bound,
#: and a walk from tail_id 1 to head_id 0 would visit every one of them.
EMPTY_RECORDS = {"SIZE(prb_desc)": "0", "SIZE(printk_info)": "0"}
HUGE_RING = Ring(count_bits=31, head_id=0, tail_id=1)


def test_dmesg_ring_of_empty_records(tmp_path: Path, sysmap: Path) -> None:
    """A clear `kernel log:` error, at once (not after walking 2^31 empty records)."""
    core = write(tmp_path / "printk.core", hostile.printk_core(EMPTY_RECORDS, HUGE_RING))
    outcome = run_child(DMESG, sysmap, core)
    assert_core_rejected(outcome, core, "invalid core")
    assert outcome["error"] == f"{core}: invalid core: kernel log: SIZE(prb_desc)=0 is too small"
    assert outcome["seconds"] < QUICK, f"dmesg took {outcome['seconds']:.2f} s"


def test_scan_ring_of_empty_records(tmp_path: Path) -> None:
    """scan reads the log for the panic message: it reports the dump (which opens) at once,
    without a panic message it cannot have."""
    core = write(tmp_path / "printk.core", hostile.printk_core(EMPTY_RECORDS, HUGE_RING))
    outcome = run_child(SCAN, core)
    assert (outcome["ok"], outcome["error"], outcome["panic"]) == (True, None, None), outcome
    assert outcome["seconds"] < QUICK, f"scan took {outcome['seconds']:.2f} s"


#: VMCOREINFO offsets and sizes near 2^64 (and a size of 2^63): adding them to an address
#: or multiplying them by an index wraps (a panic in a debug build; in a release build,
#: garbage read from the wrapped address). The counter's offset is optional (kernels before
#: atomic_long_t's OFFSET() have none): the decoder may ignore a bad one.
NEAR_2_64 = str(U64_MAX)
WRAPPING = [
    ("OFFSET(printk_ringbuffer.desc_ring)", NEAR_2_64),
    ("OFFSET(printk_ringbuffer.text_data_ring)", NEAR_2_64),
    ("OFFSET(prb_desc_ring.count_bits)", NEAR_2_64),
    ("OFFSET(prb_desc_ring.tail_id)", NEAR_2_64),
    ("OFFSET(atomic_long_t.counter)", NEAR_2_64),
    ("OFFSET(prb_desc.state_var)", NEAR_2_64),
    ("OFFSET(prb_desc.text_blk_lpos)", NEAR_2_64),
    ("OFFSET(printk_info.text_len)", NEAR_2_64),
    ("SIZE(prb_desc)", NEAR_2_64),
    ("SIZE(printk_info)", str(1 << 63)),
]
OPTIONAL_FIELDS = {"OFFSET(atomic_long_t.counter)"}


@pytest.mark.parametrize(("key", "value"), WRAPPING, ids=[key for key, _ in WRAPPING])
def test_dmesg_offsets_near_2_64(tmp_path: Path, sysmap: Path, key: str, value: str) -> None:
    """A clear `kernel log:` error that names the field, never a panic nor a log decoded
    from wrapped addresses; for an optional field, the ring's true record also does."""
    core = write(tmp_path / "printk.core", hostile.printk_core({key: value}))
    outcome = run_child(DMESG, sysmap, core)
    if key in OPTIONAL_FIELDS and outcome.get("lines") == TRUE_LOG:
        return
    assert_core_rejected(outcome, core, "invalid core")
    assert outcome["error"].startswith(f"{core}: invalid core: kernel log: "), outcome
    assert key in outcome["error"], f"the error does not name {key}: {outcome['error']}"


# -- 4. many large VMCOREINFO notes -------------------------------------------------------------


def test_many_large_vmcoreinfo_notes(tmp_path: Path, sysmap: Path) -> None:
    """64 VMCOREINFO notes of ~1 MiB, all different: merging them must not cost time or
    memory quadratic in their number. The first note's keys are the dump's."""
    core = write(tmp_path / "notes.core", hostile.vmcoreinfo_notes_core())
    outcome = run_child(OPEN, sysmap, core)
    assert outcome == {"opened": True, "osrelease": synthetic.TEST_RELEASE}


# -- 5. memory that grows for the life of the process ----------------------------------------

GROWTH = """
import elfwriter
from synthetic import synthetic_vmcoreinfo

exec_path, core, dumps, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
load = elfwriter.Load(0xFFFF_FFFF_8200_0000, 0x200_0000, bytes(4096))


def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024


marks = {}
for dump in range(1, dumps + 1):
    extra = {f"SYMBOL(sym_{dump}_{i})": f"{0xFFFF_8880_0000_0000 + 8 * i:x}" for i in range(names)}
    with open(core, "wb") as f:
        f.write(elfwriter.elf_core(synthetic_vmcoreinfo(extra), [load]))
    with kvm_rs.Kvm(exec_path, core) as kd:
        osrelease = kd.info.osrelease
    del extra
    if dump in (10, dumps):
        marks[dump] = rss()
report(after_10=marks[10], after_last=marks[dumps], osrelease=osrelease)
"""


def test_memory_does_not_grow_with_dumps_opened(tmp_path: Path, sysmap: Path) -> None:
    """1,000 dumps of one kernel, each naming 2,000 symbols no other dump names, through one
    (cached) System.map: what open learns about one dump must not stay with the exec file.
    Timeout 60 s (1,000 dumps written and opened)."""
    outcome = run_child(
        GROWTH,
        sysmap,
        tmp_path / "growth.core",
        GROWTH_DUMPS,
        GROWTH_NAMES,
        timeout=GROWTH_TIMEOUT,
    )
    assert outcome["osrelease"] == synthetic.TEST_RELEASE
    grown = outcome["after_last"] - outcome["after_10"]
    assert grown <= GROWTH_SLACK, (
        f"RSS grew {grown / 2**20:.1f} MiB between dump 10 and dump {GROWTH_DUMPS}"
    )


# -- 6. a string table without a NUL ------------------------------------------------------------

NLIST_ONCE = """
try:
    kd = kvm_rs.Kvm(sys.argv[1], sys.argv[2])
except kvm_rs.KvmError as e:
    report(stage="open", **error(e))
else:
    try:
        found = kd.nlist(["x"])
    except kvm_rs.KvmError as e:
        report(stage="nlist", **error(e))
    else:
        report(stage="nlist", found=found)
    kd.close()
"""


def test_strtab_without_nul(tmp_path: Path) -> None:
    """50,000 symbols whose names all run to the end of a 2 MB `.strtab` of 'A's (no NUL):
    open and the first nlist finish quickly in bounded memory, with a clear error about the
    exec file or with nothing found (no symbol has a name that ends)."""
    exec_path = write(tmp_path / "vmlinux-nul-less", hostile.nul_less_strtab_exec())
    core = synthetic_core(tmp_path)
    outcome = run_child(NLIST_ONCE, exec_path, core)
    if "error" in outcome:
        assert outcome["kvm_error"] and outcome["hard"], outcome
        assert outcome["error"].startswith(f"{exec_path}: "), outcome
    else:
        assert outcome == {"stage": "nlist", "found": {}}


# -- 7 and 11. writes the file cannot hold ------------------------------------------------------

WRITE = """
exec_path, core, addr = sys.argv[1], sys.argv[2], int(sys.argv[3], 0)
with kvm_rs.Kvm(exec_path, core, flags=os.O_RDWR) as kd:
    try:
        written = kd.write(addr, b"x" * 16)
    except kvm_rs.KvmError as e:
        report(**error(e))
    else:
        report(written=written)
"""


def assert_write_refused(exec_path: Path, core: Path, addr: int) -> dict[str, Any]:
    """kvm_write of 16 bytes at `addr` raises a hard KvmError that says the write failed
    (`kvm_write: ...`, not a read's message) and leaves the file as it was."""
    before = core.read_bytes()
    outcome = run_child(WRITE, exec_path, core, hex(addr))
    assert "error" in outcome, f"the write succeeded: {outcome}"
    assert core.stat().st_size == len(before), "the write changed the file's size"
    assert core.read_bytes() == before, "the write changed the file"
    assert outcome["kvm_error"] and outcome["hard"], outcome
    assert outcome["error"].startswith("kvm_write: short write ("), outcome["error"]
    assert outcome["error"].endswith(" is past the end of the file)"), outcome["error"]
    return outcome


@pytest.mark.parametrize("where", ["missing", "straddling"])
def test_write_into_cut_elf(tmp_path: Path, sysmap: Path, where: str) -> None:
    """The last PT_LOAD runs past EOF: a write there (or across EOF) fails and writes
    nothing; the file is neither grown nor patched."""
    cut = hostile.cut_elf_core()
    core = write(tmp_path / "cut.core", cut.image)
    assert_write_refused(sysmap, core, getattr(cut, where))


@pytest.mark.parametrize("where", ["missing", "straddling"])
def test_write_into_cut_kdump(tmp_path: Path, sysmap: Path, where: str) -> None:
    """An uncompressed kdump cut inside its last page's data: the same."""
    cut = hostile.cut_kdump()
    core = write(tmp_path / "cut.kdump", cut.image)
    assert_write_refused(sysmap, core, getattr(cut, where))


def test_write_control(tmp_path: Path, sysmap: Path) -> None:
    """Control: the same kdump, whole, takes the write where it holds the page."""
    image, _ = hostile.raw_kdump()
    core = write(tmp_path / "whole.kdump", image)
    outcome = run_child(WRITE, sysmap, core, hex(hostile.image_va(hostile.IMAGE_PFN + 2, 16)))
    assert outcome == {"written": 16}


@pytest.mark.parametrize(
    "offset",
    [0xFFFF_FFFF_FFFF_F000, U64_MAX - 7, 0x7FFF_FFFF_FFFF_F000],
    ids=["2^64-4096", "2^64-8", "2^63-4096"],
)
def test_write_to_descriptor_offset_near_2_64(tmp_path: Path, sysmap: Path, offset: int) -> None:
    """A page descriptor whose data offset is near 2^64 (or far past EOF): the write fails
    cleanly and the file is unchanged."""
    image, addr = hostile.kdump_with_descriptor_offset(offset)
    core = write(tmp_path / "far.kdump", image)
    assert_write_refused(sysmap, core, addr)


# -- 8. a core path holding a NUL -------------------------------------------------------------

NUL_PATH = """
exec_path = sys.argv[1]
core = "dump\\0x" if sys.argv[2] == "str" else b"dump\\0x"
try:
    kvm_rs.Kvm(exec_path, core)
except (kvm_rs.KvmError, ValueError) as e:
    report(**error(e))
else:
    report(opened=True)
"""


@pytest.mark.parametrize("kind", ["str", "bytes"])
def test_core_path_with_nul(tmp_path: Path, sysmap: Path, kind: str) -> None:
    """A path is str, bytes or PathLike (SPEC §3); one no system call can take is the
    caller's invalid argument, not an I/O error: `<path>: Invalid argument`, EINVAL."""
    write(tmp_path / "dump", b"")  # what a C caller would open: the name up to the NUL
    outcome = run_child(NUL_PATH, sysmap, kind, cwd=tmp_path)
    assert outcome.get("kvm_error") is True, f"not a KvmError: {outcome}"
    assert (outcome["error"], outcome["errno"], outcome["hard"]) == (
        "dump\0x: Invalid argument",
        errno.EINVAL,
        True,
    )


# -- 9. Ctrl-C during scan ----------------------------------------------------------------------

INTERRUPTED_SCAN = """
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)
system_map, banner_dump, banner_at, banner_hex, path_list = sys.argv[1:6]
with open(path_list) as listing:
    paths = listing.read().splitlines()
started = time.monotonic()
print("scanning", flush=True)
try:
    kvm_rs.scan(paths)
except KeyboardInterrupt:
    stopped = time.monotonic()
    interrupted = True
else:
    stopped = time.monotonic()
    interrupted = False
with kvm_rs.Kvm(system_map, banner_dump) as kd:
    banner = kd.read(int(banner_at, 0), len(banner_hex) // 2).hex()
report(interrupted=interrupted, stopped=stopped, scan_seconds=stopped - started,
       banner_ok=banner == banner_hex)
"""


def test_ctrl_c_stops_scan(corpus: Corpus, tmp_path: Path) -> None:
    """SIGINT 1 s into a scan of 10,000 paths (~15 s of work): KeyboardInterrupt within 1 s
    of the signal, and the process goes on to open and read a dump correctly."""
    dumps = [str(corpus.dump(name)) for name in SCAN_DUMPS]
    paths = (dumps * (SCAN_PATHS // len(dumps) + 1))[:SCAN_PATHS]
    path_list = write(tmp_path / "paths.txt", "\n".join(paths).encode())
    banner = corpus.dump_truth(BANNER_DUMP)["symbols"]["linux_banner"]
    args = [corpus.system_map, corpus.dump(BANNER_DUMP), banner["runtime_address"]]
    command = child_command(INTERRUPTED_SCAN, *args, banner["bytes"], path_list)
    child = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit_address_space,
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        time.sleep(SIGINT_AFTER)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        out = None
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert first == "scanning\n", f"child said {first!r}"
    if out is None:
        pytest.fail(f"the scan did not stop within {TIMEOUT:g} s of SIGINT", pytrace=False)
    outcome = outcome_of(child.returncode, out, err)
    assert outcome["interrupted"], f"the scan finished instead: {outcome}"
    delay = outcome["stopped"] - sent
    assert delay <= SIGINT_GRACE, f"KeyboardInterrupt came {delay:.2f} s after SIGINT"
    assert outcome["banner_ok"], "linux_banner read wrong after the interrupted scan"
