"""The task list (SPEC §14): `Kvm.tasks()` and `getprocs` against the truth drgn read with
the kernels' full DWARF (triage.json of the corpus and the fleet), for every dump format of
every boot, with each kind of symbol source; a dump with its BTF zeroed; the fleet's
trixie-a, whose dump lost one task_struct's page; a synthetic task list that loops.

The truth's `tasks` are every thread of drgn's for_each_task (no idle tasks); `tasks()`
lists the same: the idle tasks (pid 0) are on no task list.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import btfwriter
import elfwriter
import kvm_rs
import pytest
import synthetic
from test_fleet import elf_phdrs

if TYPE_CHECKING:
    from conftest import Corpus, Fleet

TESTS = Path(__file__).resolve().parent
EXEC_KINDS = ["system.map", "core", "vmlinux"]
NO_BTF = (
    ": no BTF type information in the dump (kernel built without CONFIG_DEBUG_INFO_BTF): "
    "give a vmlinux with a .BTF section"
)
TEXT_ONLY = (
    ": no symbol init_task (a symbol table of text symbols only, as a kernel built without "
    "CONFIG_KALLSYMS_ALL keeps): give a System.map or vmlinux"
)
TRIXIE = "trixie-a.mdf-d31-zlib.kdump"
#: The task whose page trixie-a's filter excluded (triage.json's task_walk breaks).
TRIXIE_LOST = 0xFFFF8E0501C60000
ZEROED_SOURCE = "boot-nokaslr.qemu-elf.vmcore"
FIELDS = ("pid", "tgid", "ppid", "comm", "state")
#: Facts the truth has beyond the SPEC's five, compared too.
MORE_FIELDS = ("kthread", "cpu", "on_cpu", "task")


@cache
def _triage(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "triage.json").read_text())  # type: ignore[no-any-return]


def boot_of(folder: Path, dump_file: str) -> dict[str, Any]:
    [boot] = [b for b in _triage(folder)["boots"].values() if dump_file in b["dumps"]]
    return boot  # type: ignore[no-any-return]


def truth_rows(boot: dict[str, Any], fields: tuple[str, ...] = FIELDS) -> list[tuple[Any, ...]]:
    def value(task: dict[str, Any], name: str) -> Any:
        return int(task[name], 16) if name == "task" else task[name]

    return sorted(tuple(value(t, f) for f in fields) for t in boot["tasks"])


def rows(procs: list[kvm_rs.Proc], fields: tuple[str, ...] = FIELDS) -> list[tuple[Any, ...]]:
    return sorted(tuple(getattr(p, f) for f in fields) for p in procs)


def release_at_least_6(boot: dict[str, Any]) -> bool:
    return int(boot["release"].split(".")[0]) >= 6


def assert_equals_truth(procs: kvm_rs.ProcList, boot: dict[str, Any]) -> None:
    assert rows(procs) == truth_rows(boot)
    assert rows(procs, MORE_FIELDS) == truth_rows(boot, MORE_FIELDS)
    assert [p.pid for p in procs] == sorted(p.pid for p in procs)
    if boot["task_walk"]["complete"]:
        assert procs.complete, procs.problems
        assert procs.problems == [] and procs.reason is None
        assert all(p.uid == 0 for p in procs), "the busybox guests run everything as root"
    else:
        # trixie-a's filter dropped some cred pages too (init's among them): uid None there.
        assert {p.uid for p in procs} == {0, None}


# -- the corpus: every dump, every symbol source ----------------------------------------------


@pytest.mark.parametrize("exec_kind", EXEC_KINDS)
def test_corpus_tasks_equal_the_truth(corpus: Corpus, dump_name: str, exec_kind: str) -> None:
    boot = boot_of(corpus.dir, corpus.dump(dump_name).name)
    execfile = kvm_rs.CORE_SYMBOLS if exec_kind == "core" else corpus.exec_path(exec_kind)
    with kvm_rs.Kvm(execfile, corpus.dump(dump_name)) as kd:
        procs = kd.tasks()
        assert_equals_truth(procs, boot)
        assert kd.tasks() == procs, "a second call gives the same (BTF is cached)"
        assert kvm_rs.getprocs(kd) == list(procs)


def test_corpus_getprocs_ops(corpus: Corpus) -> None:
    boot = boot_of(corpus.dir, corpus.dump("boot-kaslr.mdf-d31-snappy.kdump").name)
    kd = kvm_rs.open(corpus.system_map, corpus.dump("boot-kaslr.mdf-d31-snappy.kdump"))
    assert kd is not None
    everything = kvm_rs.getprocs(kd, kvm_rs.KERN_PROC_ALL)
    assert everything is not None and len(everything) == boot["task_count"]
    init = kvm_rs.getprocs(kd, kvm_rs.KERN_PROC_PID, 1)
    assert init is not None and [(p.pid, p.comm, p.kthread) for p in init] == [(1, "init", False)]
    assert init[0].task == int(boot["crashed"]["task"], 16)
    assert kvm_rs.getprocs(kd, kvm_rs.KERN_PROC_PID, 99999) == []
    assert kvm_rs.getprocs(kd, kvm_rs.KERN_PROC_UID, 0) == everything
    assert kvm_rs.getprocs(kd, kvm_rs.KERN_PROC_UID, 1000) == []
    kthreads = kvm_rs.getprocs(kd, kvm_rs.KERN_PROC_KTHREAD)
    assert kthreads is not None
    assert sorted(p.pid for p in kthreads) == sorted(
        t["pid"] for t in boot["tasks"] if t["kthread"]
    )
    assert kvm_rs.geterr(kd) == ""
    assert kvm_rs.getprocs(kd, 99) is None
    assert kvm_rs.geterr(kd) == "kvm_getprocs: invalid op 99"
    assert kvm_rs.close(kd) == 0
    assert kvm_rs.getprocs(kd) is None
    assert kvm_rs.geterr(kd) == "kvm handle is closed"


def test_proc_record(corpus: Corpus) -> None:
    with kvm_rs.Kvm(corpus.system_map, corpus.dump("boot-nokaslr.mdf-d31-zlib.kdump")) as kd:
        procs = kd.tasks()
    assert isinstance(procs, list) and isinstance(procs, kvm_rs.ProcList)
    init = procs[0]
    assert init == kvm_rs.Proc(
        pid=1,
        tgid=1,
        ppid=0,
        comm="init",
        state="R",
        uid=0,
        cpu=0,
        on_cpu=1,
        kthread=False,
        task=0xFFFF888004A06100,
    )
    with pytest.raises(AttributeError):
        init.pid = 2  # type: ignore[misc]


def test_no_files_handle_has_no_tasks() -> None:
    kd = kvm_rs.openfiles(None, None, None, kvm_rs.KVM_NO_FILES)
    assert kd is not None
    assert kvm_rs.getprocs(kd) is None
    assert kvm_rs.geterr(kd) == "kvm_getprocs: no core file (KVM_NO_FILES)"


# -- the fleet: other kernels, arm64, a split set ---------------------------------------------


@pytest.mark.parametrize("exec_kind", ["system.map", "core"])
def test_fleet_tasks_equal_the_truth(fleet: Fleet, fleet_whole_dump: str, exec_kind: str) -> None:
    boot = boot_of(fleet.dir, fleet_whole_dump)
    path = fleet.dump(fleet_whole_dump)
    if exec_kind == "core" and not release_at_least_6(boot):
        # No kallsyms tables in VMCOREINFO before 6.0: nothing to take symbols from.
        with pytest.raises(kvm_rs.KvmError, match="no kallsyms tables in VMCOREINFO"):
            kvm_rs.Kvm(kvm_rs.CORE_SYMBOLS, path)
        return
    execfile = kvm_rs.CORE_SYMBOLS if exec_kind == "core" else fleet.exec_file(fleet_whole_dump)
    with kvm_rs.Kvm(execfile, path) as kd:
        if exec_kind == "core" and fleet.machine(fleet_whole_dump) == "aarch64":
            # Debian's arm64 kernel keeps text symbols only in kallsyms (no
            # CONFIG_KALLSYMS_ALL): no init_task, no __start_BTF.
            with pytest.raises(kvm_rs.KvmError) as raised:
                kd.tasks()
            assert str(raised.value) == f"{path}{TEXT_ONLY}"
            return
        procs = kd.tasks()
    assert_equals_truth(procs, boot)
    if fleet_whole_dump == TRIXIE:
        check_trixie(procs, boot)


@pytest.mark.parametrize("exec_kind", ["system.map", "core"])
def test_fleet_split_set_tasks_equal_the_truth(fleet: Fleet, exec_kind: str) -> None:
    for name, split in fleet.split_sets.items():
        parts = [fleet.dump(p) for p in split["parts"]]
        boot = boot_of(fleet.dir, split["parts"][0])
        execfile = (
            kvm_rs.CORE_SYMBOLS if exec_kind == "core" else fleet.exec_file(split["parts"][0])
        )
        with kvm_rs.Kvm(execfile, [parts[1], parts[0]]) as kd:
            assert_equals_truth(kd.tasks(), boot), name


def check_trixie(procs: kvm_rs.ProcList, boot: dict[str, Any]) -> None:
    """makedumpfile 1.7.2 excluded one task_struct's page: 49 of 50 tasks, and why."""
    walk = boot["task_walk"]
    assert (walk["tasks_found"], walk["nr_threads"], walk["complete"]) == (49, 50, False)
    assert len(procs) == 49
    assert not procs.complete
    assert procs.problems[0] == (
        f"the task list: task {TRIXIE_LOST:#x} is not readable "
        f"(invalid address ({TRIXIE_LOST + 0x8B0:#x}): excluded)"
    )
    assert procs.problems[-1] == "49 tasks read, nr_threads says 50"
    # The two leaders whose signal_struct pages went too (truth: threads_of 64 and 62).
    thread_breaks = [p for p in procs.problems if p.startswith("the threads of task ")]
    leaders = {p.split()[4].rstrip(":") for p in thread_breaks}
    by_task = {p.task: p.pid for p in procs}
    assert sorted(by_task[int(a, 16)] for a in leaders) == [62, 64]
    assert procs.reason == "; ".join(procs.problems)


def test_trixie_getprocs_gives_what_it_can(fleet: Fleet) -> None:
    kd = kvm_rs.open(fleet.exec_file(TRIXIE), fleet.dump(TRIXIE))
    assert kd is not None
    procs = kvm_rs.getprocs(kd)
    assert procs is not None and len(procs) == 49
    assert kvm_rs.geterr(kd) == ""


# -- BTF from the vmlinux, and no BTF at all --------------------------------------------------


def _zero_physical(path: Path, start: int, end: int) -> None:
    """Zeroes physical [start, end) in an ELF core keyed by physical address (QEMU's)."""
    zeroed = 0
    with path.open("r+b") as f:
        for p_type, _, offset, _, paddr, filesz, _, _ in elf_phdrs(path):
            lo, hi = max(start, paddr), min(end, paddr + filesz)
            if p_type == 1 and lo < hi:
                f.seek(offset + lo - paddr)
                f.write(bytes(hi - lo))
                zeroed += hi - lo
    assert zeroed == end - start


@pytest.fixture(scope="module")
def zeroed_btf(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the QEMU ELF dump whose BTF pages are zeros."""
    boot = boot_of(corpus.dir, ZEROED_SOURCE)
    [(first, last)] = [(int(a, 16), int(b, 16)) for a, b in boot["btf"]["pfn_ranges"]]
    copy = tmp_path_factory.mktemp("zeroed-btf") / "zeroed.vmcore"
    with corpus.dump(ZEROED_SOURCE).open("rb") as src, copy.open("wb") as dst:
        os.sendfile(dst.fileno(), src.fileno(), 0, os.fstat(src.fileno()).st_size)
    _zero_physical(copy, first * 4096, (last + 1) * 4096)
    return copy


@pytest.mark.parametrize("exec_kind", ["system.map", "core"])
def test_no_btf_in_the_dump(corpus: Corpus, zeroed_btf: Path, exec_kind: str) -> None:
    execfile = kvm_rs.CORE_SYMBOLS if exec_kind == "core" else corpus.system_map
    with kvm_rs.Kvm(execfile, zeroed_btf) as kd:
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.tasks()
        assert str(raised.value) == f"{zeroed_btf}{NO_BTF}"
        assert raised.value.hard and raised.value.filename == str(zeroed_btf)
        assert kd.geterr() == f"{zeroed_btf}{NO_BTF}"
        assert kvm_rs.getprocs(kd) is None
        # Everything that needs no BTF still works.
        assert kd.info.osrelease == "6.1.0-56-amd64"
        value = kd.nlist(["init_uts_ns"])["init_uts_ns"]
        assert b"6.1.0-56-amd64" in kd.read(value, 256)
        assert any("sysrq triggered crash" in line for line in kd.dmesg())
        start = kd.nlist(["__start_BTF"])["__start_BTF"]
        assert kd.read(start, 64) == bytes(64)


def test_btf_from_the_vmlinux_section(corpus: Corpus, zeroed_btf: Path) -> None:
    """The stripped vmlinux's .BTF gives the types: the zeroed dump's tasks still read."""
    boot = boot_of(corpus.dir, ZEROED_SOURCE)
    with kvm_rs.Kvm(corpus.vmlinux, zeroed_btf) as kd:
        assert_equals_truth(kd.tasks(), boot)


def test_sun_convention_prints_the_no_btf_error(
    corpus: Corpus, zeroed_btf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kd = kvm_rs.open(corpus.system_map, zeroed_btf, None, os.O_RDONLY, "ps")
    assert kd is not None
    assert kvm_rs.getprocs(kd) is None
    assert capsys.readouterr().err == f"ps: {zeroed_btf}{NO_BTF}\n"


# -- hostile: a synthetic kernel whose task list loops ----------------------------------------

DIRECT_MAP = 0xFFFF_8880_0000_0000
TASK_SIZE = 0x80
BTF_AT = synthetic.TEXT_ADDR + 0x11_0000
INIT_TASK = synthetic.TEXT_ADDR + 0x20_1000
NR_THREADS = synthetic.TEXT_ADDR + 0x20_0100


def synthetic_btf() -> bytes:
    b = btfwriter.Btf()
    int_ = b.int("int", 4, signed=True)
    uint = b.int("unsigned int", 4)
    char = b.int("char", 1, signed=True)
    list_head = b.forward()
    list_ptr = b.ptr(list_head + 1)
    assert (
        b.struct("list_head", 16, [("next", list_ptr, 0), ("prev", list_ptr, 8)]) == list_head + 1
    )
    comm = b.array(char, int_, 16)
    kuid = b.struct("", 4, [("val", uint, 0)])
    cred = b.struct("cred", 8, [("uid", kuid, 4)])
    cred_ptr = b.ptr(cred)
    task = b.forward() + 1
    task_ptr = b.ptr(task)
    members = [
        ("tasks", list_head + 1, 0x10),
        ("pid", int_, 0x20),
        ("tgid", int_, 0x24),
        ("real_parent", task_ptr, 0x28),
        ("comm", comm, 0x30),
        ("__state", uint, 0x40),
        ("exit_state", int_, 0x44),
        ("flags", uint, 0x48),
        ("cred", cred_ptr, 0x50),
        ("cpu", uint, 0x58),
        ("on_cpu", int_, 0x5C),
        ("thread_group", list_head + 1, 0x60),
    ]
    assert b.struct("task_struct", TASK_SIZE, members) == task
    return b.blob()


def synthetic_kernel(loop: bool) -> tuple[bytes, bytes]:
    """(core, System.map): init_task and three tasks; with `loop`, task 3's next points
    back at task 1 and task 1's prev at task 3, so neither direction reaches the head."""
    addresses = [INIT_TASK] + [DIRECT_MAP + i * 0x1000 for i in (1, 2, 3)]
    memory: dict[int, bytearray] = {a: bytearray(TASK_SIZE) for a in addresses}
    order = list(range(4))
    for i, at in enumerate(addresses):
        t = memory[at]
        nxt = addresses[order[(i + 1) % 4]]
        prv = addresses[order[(i - 1) % 4]]
        if loop and i == 3:
            nxt = addresses[1]
        if loop and i == 1:
            prv = addresses[3]
        struct.pack_into("<QQ", t, 0x10, nxt + 0x10, prv + 0x10)
        struct.pack_into("<ii", t, 0x20, i, i)
        struct.pack_into("<Q", t, 0x28, INIT_TASK)
        t[0x30 : 0x30 + 16] = f"task{i}".encode().ljust(16, b"\0")
        struct.pack_into("<QQ", t, 0x60, at + 0x60, at + 0x60)
    cred = DIRECT_MAP + 0x10000
    for at in addresses:
        struct.pack_into("<Q", memory[at], 0x50, cred)
    loads = [elfwriter.Load(a, 0, bytes(m)) for a, m in memory.items()]
    loads.append(elfwriter.Load(cred, 0, bytes(8)))
    btf = synthetic_btf()
    loads.append(elfwriter.Load(BTF_AT, 0, btf))
    loads.append(elfwriter.Load(NR_THREADS, 0, struct.pack("<I", 3)))
    core = elfwriter.elf_core(synthetic.synthetic_vmcoreinfo(), loads)
    symbols = [
        *synthetic.SYMBOLS,
        (BTF_AT, "R", "__start_BTF"),
        (BTF_AT + len(btf), "R", "__stop_BTF"),
        (INIT_TASK, "D", "init_task"),
        (NR_THREADS, "B", "nr_threads"),
    ]
    return core, elfwriter.system_map(sorted(symbols))


def run_child(core: Path, symbols: Path) -> dict[str, Any]:
    """`tasks()` in a child limited to 5 s: a hang fails this test, not the session."""
    code = textwrap.dedent(
        f"""
        import json, kvm_rs
        with kvm_rs.Kvm({str(symbols)!r}, {str(core)!r}) as kd:
            procs = kd.tasks()
        print(json.dumps({{"pids": [p.pid for p in procs], "complete": procs.complete,
                          "problems": procs.problems}}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=5, cwd=TESTS
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def test_synthetic_task_list(make_file: Any) -> None:
    core, symbols = synthetic_kernel(loop=False)
    outcome = run_child(make_file("whole.core", core), make_file("System.map-whole", symbols))
    assert outcome == {"pids": [1, 2, 3], "complete": True, "problems": []}


def test_a_task_list_that_loops_ends(make_file: Any) -> None:
    core, symbols = synthetic_kernel(loop=True)
    outcome = run_child(make_file("loop.core", core), make_file("System.map-loop", symbols))
    assert outcome["pids"] == [1, 2, 3]
    assert outcome["complete"] is False
    assert outcome["problems"] == [
        f"the task list does not come back to its head (a loop at {DIRECT_MAP + 0x1010:#x})"
    ]
