"""The system facts of a triage (SPEC §14): `Kvm.modules()`, `Kvm.loadavg()`,
`getloadavg`, `Kvm.triage()` against the truth drgn read with the kernels' full DWARF
(triage.json of the corpus and the fleet), for every dump of every boot (each kdump codec,
ELF, paging ELF, flattened, the split set whole) with the System.map and, where the kernel's
kallsyms holds data symbols (x86_64 6.x), with CORE_SYMBOLS; every dump of a boot gives the
same report. A dump with its BTF zeroed; a dump whose tainted_mask was rewritten; a
synthetic module list that loops.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import btfwriter
import elfwriter
import kvm_rs
import kvm_rs._signature
import pytest
import synthetic
from test_tasks import NO_BTF, TEXT_ONLY, ZEROED_SOURCE, _triage, boot_of, zeroed_btf

if TYPE_CHECKING:
    from conftest import Corpus, Fleet

__all__ = ["zeroed_btf"]  # the fixture, shared with test_tasks

TESTS = Path(__file__).resolve().parent
CorePath = Path | list[Path]


def has_data_kallsyms(boot: dict[str, Any]) -> bool:
    """VMCOREINFO names kallsyms tables since 6.0; Debian's arm64 kallsyms has text only."""
    return int(boot["release"].split(".")[0]) >= 6 and boot["machine"] != "aarch64"


def corpus_units(corpus: Corpus) -> Iterator[tuple[dict[str, Any], str, CorePath, Path]]:
    """(boot, label, core, System.map) for every corpus dump."""
    for boot in _triage(corpus.dir)["boots"].values():
        for name in boot["dumps"]:
            yield boot, name, corpus.dir / name, corpus.system_map


def fleet_units(fleet: Fleet) -> Iterator[tuple[dict[str, Any], str, CorePath, Path]]:
    """(boot, label, core, System.map) for every fleet dump; a split set is one dump."""
    for boot in _triage(fleet.dir)["boots"].values():
        seen: set[str] = set()
        for name in boot["dumps"]:
            if name in seen:
                continue
            if fleet.is_split_part(name):
                parts = fleet.split_sets[fleet.split_set_of(name)]["parts"]
                seen.update(parts)
                yield boot, "+".join(parts), [fleet.dump(p) for p in parts], fleet.exec_file(name)
            else:
                yield boot, name, fleet.dump(name), fleet.exec_file(name)


def truth_modules(boot: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (
            m["name"],
            int(m["text_base"], 16),
            m["core_size"],
            m["text_size"],
            m["state"],
            int(m["module"], 16),
        )
        for m in boot["modules"]
    ]


def module_rows(modules: Any) -> list[tuple[Any, ...]]:
    return [(m.name, m.base, m.size, m.text_size, m.state, m.module) for m in modules]


def assert_report_equals_truth(report: kvm_rs.TriageReport, boot: dict[str, Any]) -> None:
    assert (report.release, report.machine, report.nodename) == (
        boot["release"],
        boot["machine"],
        boot["nodename"],
    )
    # ktime_get_coarse_boottime to the nanosecond: the truth's uptime_s is ns / 1e9 too.
    assert report.uptime == boot["uptime_s"] == boot["uptime"]["coarse_boottime_ns"] / 1e9
    assert report.uptime_source == "tk_core"
    assert report.loadavg is not None
    assert [f"{x:.2f}" for x in report.loadavg] == boot["loadavg"]
    assert (report.taint, report.taint_string) == (boot["taint"], boot["taint_string"])
    assert report.nr_cpus == boot["nr_cpus"]
    assert report.possible_cpus == tuple(boot["possible_cpus"])
    assert report.present_cpus == tuple(boot["present_cpus"])
    assert report.online_cpus == tuple(boot["online_cpus"])
    assert report.totalram_pages == boot["totalram_pages"]
    assert report.panic_message == boot["panic"]
    assert boot["panic_line"] == f"Kernel panic - not syncing: {boot['panic']}"
    assert report.crash_cpu == boot["panic_cpu"]
    assert report.crash_time is None, "QEMU's dumps carry no CRASHTIME"
    assert module_rows(report.modules) == truth_modules(boot)
    assert report.modules_complete and report.modules_reason is None
    assert report.task_count == boot["task_count"]
    assert dict(report.task_states) == Counter(t["state"] for t in boot["tasks"])
    assert report.tasks_complete == boot["task_walk"]["complete"]
    assert (report.tasks_reason is None) == report.tasks_complete
    # The crashed task, its backtrace (frame names as kallsyms would print them) and the
    # signature those frames give.
    crashed = boot["crashed"]
    assert (report.crash_pid, report.crash_comm) == (crashed["pid"], crashed["comm"])
    assert report.backtrace is not None
    assert [f.symbol for f in report.backtrace] == crashed["stack"]["ksyms"]
    assert report.signature == kvm_rs._signature.signature(report.backtrace)
    assert report.problems == ()


def check_units(units: Iterator[tuple[dict[str, Any], str, CorePath, Path]]) -> int:
    """Every dump of every boot, with its System.map and (where it can) CORE_SYMBOLS: the
    facts equal the truth, and every dump of a boot gives the same report."""
    reports: dict[str, dict[str, kvm_rs.TriageReport]] = {}
    checked = 0
    for boot, label, core, system_map in units:
        kinds: list[Any] = [system_map]
        if has_data_kallsyms(boot):
            kinds.append(kvm_rs.CORE_SYMBOLS)
        for execfile in kinds:
            # Each dump decodes its own names and BTF (the build cache is tested below).
            kvm_rs.clear_build_cache()
            with kvm_rs.Kvm(execfile, core) as kd:
                report = kd.triage()
                modules = kd.modules()
                loadavg = kd.loadavg()
                getloadavg = kvm_rs.getloadavg(kd)
            assert_report_equals_truth(report, boot), (label, execfile)
            assert module_rows(modules) == truth_modules(boot), label
            assert modules.complete and modules.problems == [] and modules.reason is None
            assert [f"{x:.2f}" for x in loadavg] == boot["loadavg"], label
            assert getloadavg == list(loadavg)
            reports.setdefault(boot["release"] + boot["primary_dump"], {})[
                f"{label} ({execfile})"
            ] = report
            checked += 1
    for per_boot in reports.values():
        first = next(iter(per_boot.values()))
        assert all(r == first for r in per_boot.values()), list(per_boot)
        assert len({hash(r) for r in per_boot.values()}) == 1
    return checked


def test_corpus_facts_equal_the_truth(corpus: Corpus) -> None:
    # 7 dumps, each with the System.map and with CORE_SYMBOLS.
    assert check_units(corpus_units(corpus)) == 14


def triage_of(dump: Path) -> tuple[Any, ...]:
    with kvm_rs.Kvm(kvm_rs.CORE_SYMBOLS, dump) as kd:
        names = ["init_task", "jiffies", "panic", "__per_cpu_start", "fixed_percpu_data"]
        return (kd.triage(), list(kd.tasks()), kd.stack(), kd.nlist(names), kd.stack(1))


def test_the_next_dump_of_a_build_reuses_its_names_and_btf(corpus: Corpus) -> None:
    """The KASLR boot after the no-KASLR one: its kallsyms names and BTF come from the build
    cache, its symbol values from its own offsets; everything equals a fresh decode."""
    nokaslr = corpus.dump("boot-nokaslr.mdf-d31-zlib.kdump")
    kaslr = corpus.dump("boot-kaslr.mdf-d31-snappy.kdump")
    kvm_rs.clear_build_cache()
    fresh = triage_of(kaslr)
    kvm_rs.clear_build_cache()
    first = triage_of(nokaslr)
    hits, misses = kvm_rs._native.build_cache_stats()
    cached = triage_of(kaslr)
    assert kvm_rs._native.build_cache_stats() == (hits + 2, misses), "names and BTF: hits"
    assert cached == fresh
    # The boots differ where KASLR moves things, so a value taken from the cache would show.
    assert cached[3]["jiffies"] != first[3]["jiffies"]
    assert cached[3]["__per_cpu_start"] == first[3]["__per_cpu_start"] == 0, "absolute"
    assert_report_equals_truth(cached[0], boot_of(corpus.dir, kaslr.name))


def test_a_build_cache_key_is_the_dumps_own_bytes(corpus: Corpus, zeroed_btf: Path) -> None:
    """A dump of the same build whose BTF pages are zeros misses the cache its build left:
    the key holds BTF's first and last page, read from the dump itself."""
    kvm_rs.clear_build_cache()
    triage_of(corpus.dump(ZEROED_SOURCE))
    with kvm_rs.Kvm(kvm_rs.CORE_SYMBOLS, zeroed_btf) as kd, pytest.raises(kvm_rs.KvmError) as e:
        kd.triage()
    assert str(e.value) == f"{zeroed_btf}{NO_BTF}"


def test_fleet_facts_equal_the_truth(fleet: Fleet) -> None:
    # arm64-a (2 dumps), big-a (the split set, the ELF), bullseye-a, trixie-a: 6 dumps;
    # CORE_SYMBOLS for the x86_64 6.x ones (big-a's two, trixie-a).
    assert check_units(fleet_units(fleet)) == 9


def test_text_only_kallsyms_and_no_kallsyms(fleet: Fleet) -> None:
    """arm64's kallsyms has text symbols only: triage and loadavg say so; 5.10 publishes no
    kallsyms tables at all."""
    path = fleet.dump("arm64-a.qemu-elf.vmcore")
    with kvm_rs.Kvm(kvm_rs.CORE_SYMBOLS, path) as kd:
        for call in (kd.triage, kd.modules, kd.loadavg):
            with pytest.raises(kvm_rs.KvmError) as raised:
                call()
            assert str(raised.value) == f"{path}{TEXT_ONLY}"
        assert kvm_rs.getloadavg(kd) is None
        assert kvm_rs.geterr(kd) == f"{path}{TEXT_ONLY}"
    with pytest.raises(kvm_rs.KvmError, match="no kallsyms tables in VMCOREINFO"):
        kvm_rs.Kvm(kvm_rs.CORE_SYMBOLS, fleet.dump("bullseye-a.mdf-d31-zlib.kdump"))


def test_getloadavg_nelem(fleet: Fleet) -> None:
    """kvm_getloadavg fills at most 3 samples and returns how many: here the list's length."""
    kd = kvm_rs.open(
        fleet.exec_file("trixie-a.mdf-d31-zlib.kdump"), fleet.dump("trixie-a.mdf-d31-zlib.kdump")
    )
    assert kd is not None
    assert kvm_rs.getloadavg(kd) == [0.56, 0.12, 0.04]
    assert kvm_rs.getloadavg(kd, 1) == [0.56]
    assert kvm_rs.getloadavg(kd, 0) == []
    assert kvm_rs.getloadavg(kd, 10) == [0.56, 0.12, 0.04]
    assert kvm_rs.geterr(kd) == ""
    assert kvm_rs.getloadavg(kd, -1) is None
    assert kvm_rs.geterr(kd) == "kvm_getloadavg: invalid nelem -1"
    with pytest.raises(TypeError):
        kvm_rs.getloadavg(kd, "3")  # type: ignore[arg-type]
    assert kvm_rs.close(kd) == 0
    assert kvm_rs.getloadavg(kd) is None
    assert kvm_rs.geterr(kd) == "kvm handle is closed"


def test_no_files_handle() -> None:
    kd = kvm_rs.openfiles(None, None, None, kvm_rs.KVM_NO_FILES)
    assert kd is not None
    assert kvm_rs.getloadavg(kd) is None
    assert kvm_rs.geterr(kd) == "kvm_getloadavg: no core file (KVM_NO_FILES)"
    with pytest.raises(kvm_rs.KvmError, match=r"^kvm_getmodules: no core file"):
        kd.modules()
    with pytest.raises(kvm_rs.KvmError, match=r"^kvm_getprocs: no core file"):
        kd.triage()


def test_records(corpus: Corpus) -> None:
    with kvm_rs.Kvm(corpus.system_map, corpus.dump("boot-nokaslr.mdf-d31-zlib.kdump")) as kd:
        modules = kd.modules()
        report = kd.triage()
    assert isinstance(modules, kvm_rs.ModuleList) and isinstance(modules, list)
    assert modules == [
        kvm_rs.Module(
            name="qemu_fw_cfg",
            base=0xFFFFFFFFC0201000,
            size=20480,
            text_size=4096,
            state="MODULE_STATE_LIVE",
            module=0xFFFFFFFFC02042C0,
        )
    ]
    assert report.modules == tuple(modules)
    with pytest.raises(AttributeError):
        report.uptime = 0.0  # type: ignore[misc]


# -- no BTF: loadavg needs none, modules and triage do -----------------------------------------


@pytest.mark.parametrize("exec_kind", ["system.map", "core"])
def test_no_btf(corpus: Corpus, zeroed_btf: Path, exec_kind: str) -> None:
    boot = boot_of(corpus.dir, ZEROED_SOURCE)
    execfile = kvm_rs.CORE_SYMBOLS if exec_kind == "core" else corpus.system_map
    with kvm_rs.Kvm(execfile, zeroed_btf) as kd:
        for call in (kd.modules, kd.triage):
            with pytest.raises(kvm_rs.KvmError) as raised:
                call()
            assert str(raised.value) == f"{zeroed_btf}{NO_BTF}"
        # avenrun is an array of three longs: no types needed.
        assert [f"{x:.2f}" for x in kd.loadavg()] == boot["loadavg"]
        assert kvm_rs.getloadavg(kd) == [0.0, 0.0, 0.0]


# -- a tainted kernel: the letters from the kernel's own taint_flags ---------------------------


@pytest.fixture(scope="module")
def writable_copy(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("tainted") / "tainted.vmcore"
    with corpus.dump(ZEROED_SOURCE).open("rb") as src, copy.open("wb") as dst:
        os.sendfile(dst.fileno(), src.fileno(), 0, os.fstat(src.fileno()).st_size)
    return copy


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        # W (9) and O (12); 6.1 has 19 flags (TAINT_TEST, N, is the 19th): G for "not P".
        ((1 << 9) | (1 << 12), "Tainted: G        W  O      "),
        ((1 << 0) | (1 << 18), "Tainted: P                 N"),
        # A bit past the table prints nothing (the kernel's loop stops at the count).
        (1 << 40, "Tainted: G                  "),
        (0, "Not tainted"),
    ],
)
def test_taint_letters(corpus: Corpus, writable_copy: Path, mask: int, expected: str) -> None:
    with kvm_rs.Kvm(corpus.system_map, writable_copy, flags=os.O_RDWR) as kd:
        at = kd.nlist(["tainted_mask"])["tainted_mask"]
        assert kd.write(at, struct.pack("<Q", mask)) == 8
    with kvm_rs.Kvm(corpus.system_map, writable_copy) as kd:
        report = kd.triage()
    assert (report.taint, report.taint_string) == (mask, expected)


# -- hostile: a synthetic kernel whose module list loops ---------------------------------------

BTF_AT = synthetic.TEXT_ADDR + 0x11_0000
MODULES = synthetic.TEXT_ADDR + 0x20_2000
MODULE_AREA = 0xFFFF_FFFF_C000_0000
MODULE_SIZE = 0x100


def synthetic_btf() -> bytes:
    b = btfwriter.Btf()
    int_ = b.int("int", 4, signed=True)
    uint = b.int("unsigned int", 4)
    char = b.int("char", 1, signed=True)
    void_ptr = b.ptr(0)
    list_head = b.forward()
    list_ptr = b.ptr(list_head + 1)
    assert (
        b.struct("list_head", 16, [("next", list_ptr, 0), ("prev", list_ptr, 8)]) == list_head + 1
    )
    name = b.array(char, int_, 56)
    layout = b.struct(
        "module_layout", 24, [("base", void_ptr, 0), ("size", uint, 8), ("text_size", uint, 12)]
    )
    members = [
        ("state", int_, 0),
        ("list", list_head + 1, 8),
        ("name", name, 0x18),
        ("core_layout", layout, 0x60),
    ]
    b.struct("module", MODULE_SIZE, members)
    return b.blob()


def synthetic_kernel(loop: bool) -> tuple[bytes, bytes]:
    """(core, System.map): three modules on `modules`; with `loop`, the third's next
    points back at the first, so the walk never comes back to the head."""
    addresses = [MODULE_AREA + i * 0x1000 for i in (1, 2, 3)]
    nodes = [a + 8 for a in addresses]
    loads = [elfwriter.Load(MODULES, 0, struct.pack("<QQ", nodes[0], nodes[-1]))]
    for i, at in enumerate(addresses):
        m = bytearray(MODULE_SIZE)
        nxt = nodes[i + 1] if i + 1 < len(nodes) else (nodes[0] if loop else MODULES)
        prv = nodes[i - 1] if i else MODULES
        struct.pack_into("<QQ", m, 8, nxt, prv)
        m[0x18 : 0x18 + 56] = f"mod{i + 1}".encode().ljust(56, b"\0")
        struct.pack_into("<QII", m, 0x60, at + 0x10_0000, 0x3000, 0x1000)
        loads.append(elfwriter.Load(at, 0, bytes(m)))
    btf = synthetic_btf()
    loads.append(elfwriter.Load(BTF_AT, 0, btf))
    core = elfwriter.elf_core(synthetic.synthetic_vmcoreinfo(), loads)
    symbols = [
        *synthetic.SYMBOLS,
        (BTF_AT, "R", "__start_BTF"),
        (BTF_AT + len(btf), "R", "__stop_BTF"),
        (synthetic.TEXT_ADDR + 0x20_1000, "D", "init_task"),
        (MODULES, "d", "modules"),
    ]
    return core, elfwriter.system_map(sorted(symbols))


def run_child(core: Path, symbols: Path) -> dict[str, Any]:
    """`modules()` in a child limited to 5 s: a hang fails this test, not the session."""
    code = textwrap.dedent(
        f"""
        import json, kvm_rs
        with kvm_rs.Kvm({str(symbols)!r}, {str(core)!r}) as kd:
            modules = kd.modules()
        print(json.dumps({{"names": [m.name for m in modules], "complete": modules.complete,
                          "problems": modules.problems,
                          "first": [modules[0].base, modules[0].size, modules[0].state]}}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=5, cwd=TESTS
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def test_synthetic_module_list(make_file: Any) -> None:
    core, symbols = synthetic_kernel(loop=False)
    outcome = run_child(make_file("whole.core", core), make_file("System.map-whole", symbols))
    assert outcome == {
        "names": ["mod1", "mod2", "mod3"],
        "complete": True,
        "problems": [],
        # No enum module_state in this BTF: the state is its number.
        "first": [MODULE_AREA + 0x1000 + 0x10_0000, 0x3000, "0"],
    }


def test_a_module_list_that_loops_ends(make_file: Any) -> None:
    core, symbols = synthetic_kernel(loop=True)
    outcome = run_child(make_file("loop.core", core), make_file("System.map-loop", symbols))
    assert outcome["names"] == ["mod1", "mod2", "mod3"]
    assert outcome["complete"] is False
    assert outcome["problems"] == [
        f"the module list does not come back to its head (a loop at {MODULE_AREA + 0x1008:#x})"
    ]
