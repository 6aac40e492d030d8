"""Triage records (SPEC §14): what the dump says about its tasks, modules and system, read
with BTF types and no debug info."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

#: `getprocs` ops, with OpenBSD's numbers. KERN_PROC_ALL is every task (kernel threads
#: included: a crash dump's kernel threads matter); KERN_PROC_KTHREAD the kernel threads only.
KERN_PROC_ALL = 0
KERN_PROC_PID = 1
KERN_PROC_UID = 5
KERN_PROC_KTHREAD = 7


@dataclass(frozen=True)
class Proc:
    """One task, as `ps -eL` shows it: `pid` (the thread id), `tgid` (the process id),
    `ppid` (the parent's tgid; 0 for children of the idle task), `comm`, `state` (the letter
    `ps` shows: R S D I T t Z X P), `uid` (`cred->uid`), `cpu`, `on_cpu`, `kthread`, and
    `task` (the address of its task_struct). `ppid` and `uid` are None where the dump lacks
    the parent's or the cred's page; `cpu` and `on_cpu` where the kernel has no such field."""

    pid: int
    tgid: int
    ppid: int | None
    comm: str
    state: str
    uid: int | None
    cpu: int | None
    on_cpu: int | None
    kthread: bool
    task: int


class ProcList(list[Proc]):
    """`Kvm.tasks()`: a list of `Proc` in pid order, with `complete` (every walk of the
    kernel's task lists came back to its head, every task was read, and their number equals
    the kernel's `nr_threads`) and `problems` (why not, one line each)."""

    complete: bool
    problems: list[str]

    def __init__(self, procs: list[Proc], complete: bool, problems: list[str]) -> None:
        super().__init__(procs)
        self.complete = complete
        self.problems = problems

    @property
    def reason(self) -> str | None:
        """Why the list is incomplete (the problems joined), or None."""
        return "; ".join(self.problems) if self.problems else None


def proc_list(raw: tuple[list[tuple[Any, ...]], bool, list[str]]) -> ProcList:
    rows, complete, problems = raw
    return ProcList([Proc(*row) for row in rows], complete, problems)


def select(procs: list[Proc], op: int, arg: int) -> list[Proc] | None:
    """The tasks `getprocs(op, arg)` selects; None for an op it does not know."""
    if op == KERN_PROC_ALL:
        return list(procs)
    if op == KERN_PROC_PID:
        return [p for p in procs if p.pid == arg]
    if op == KERN_PROC_UID:
        return [p for p in procs if p.uid == arg]
    if op == KERN_PROC_KTHREAD:
        return [p for p in procs if p.kthread]
    return None


@dataclass(frozen=True)
class Module:
    """One loaded module, as `lsmod` and crash's `mod` show it: `name`, `base` (where its
    core text starts: `mem[MOD_TEXT].base` since 6.4, `core_layout.base` before), `size`
    (its core memory in bytes: text, data, read-only and read-only-after-init data, as
    `/proc/modules` counts it), `text_size` (the text alone), `state` (the kernel's
    `enum module_state` name, `MODULE_STATE_LIVE`) and `module` (the address of its
    `struct module`)."""

    name: str
    base: int
    size: int
    text_size: int
    state: str | None
    module: int


class ModuleList(list[Module]):
    """`Kvm.modules()`: a list of `Module` in the kernel's list order (the most recently
    loaded first, as `lsmod` prints them), with `complete` (the walk came back to the list's
    head and read every module) and `problems` (why not, one line each)."""

    complete: bool
    problems: list[str]

    def __init__(self, modules: list[Module], complete: bool, problems: list[str]) -> None:
        super().__init__(modules)
        self.complete = complete
        self.problems = problems

    @property
    def reason(self) -> str | None:
        """Why the list is incomplete (the problems joined), or None."""
        return "; ".join(self.problems) if self.problems else None


def module_list(raw: tuple[list[tuple[Any, ...]], bool, list[str]]) -> ModuleList:
    rows, complete, problems = raw
    return ModuleList([Module(*row) for row in rows], complete, problems)


def load_averages(texts: list[str]) -> tuple[float, float, float]:
    """The three averages as floats of the text /proc/loadavg prints (what glibc's
    getloadavg reads on Linux)."""
    one, five, fifteen = (float(text) for text in texts)
    return (one, five, fifteen)


@dataclass(frozen=True)
class TriageReport:
    """`Kvm.triage()`: what the dump says about the crash, read with no debug info.

    The system: `release`, `machine`, `nodename` (`init_uts_ns`), `crash_time`
    (VMCOREINFO's CRASHTIME, seconds since the epoch; None where the producer wrote none),
    `uptime` (seconds since boot) and `uptime_source` (`"tk_core"`: the coarse boot time,
    `ktime_get_coarse_boottime`, to the nanosecond; `"jiffies"`: the tick count over HZ
    where the timekeeper cannot be read), `loadavg` (as /proc/loadavg prints it), `taint`
    (`tainted_mask`) and `taint_string` (as the kernel's `print_tainted` prints it:
    `"Not tainted"` or `"Tainted: "` and one letter per flag), `nr_cpus` (`nr_cpu_ids`),
    `possible_cpus`, `present_cpus`, `online_cpus`, `totalram_pages`.

    The crash: `panic_message` (from the kernel log), `crash_cpu` (`panic_cpu`; None if
    no CPU panicked). `crash_pid`, `crash_comm`, `backtrace` (frames, innermost first) and
    `signature` need the unwinder and are None for now.

    Tasks and modules: `task_count`, `task_states` (`(letter, count)` pairs, by letter),
    `tasks_complete` and `tasks_reason` (from `Kvm.tasks()`), `modules` (`Kvm.modules()`),
    `modules_complete`, `modules_reason`. `problems`: why a fact above is None. Sequences
    are tuples: a report is hashable and compares equal across every dump of one boot."""

    release: str | None
    machine: str | None
    nodename: str | None
    crash_time: int | None
    uptime: float | None
    uptime_source: str | None
    loadavg: tuple[float, float, float] | None
    taint: int | None
    taint_string: str | None
    nr_cpus: int | None
    possible_cpus: tuple[int, ...] | None
    present_cpus: tuple[int, ...] | None
    online_cpus: tuple[int, ...] | None
    totalram_pages: int | None
    panic_message: str | None
    crash_cpu: int | None
    crash_pid: int | None
    crash_comm: str | None
    backtrace: tuple[Any, ...] | None
    signature: str | None
    task_count: int
    task_states: tuple[tuple[str, int], ...]
    tasks_complete: bool
    tasks_reason: str | None
    modules: tuple[Module, ...]
    modules_complete: bool
    modules_reason: str | None
    problems: tuple[str, ...]


def triage_report(
    system: dict[str, Any], crash_time: int | None, procs: ProcList, modules: ModuleList
) -> TriageReport:
    def cpus(name: str) -> tuple[int, ...] | None:
        found = system[name]
        return None if found is None else tuple(found)

    uptime_ns = system["uptime_ns"]
    loadavg = system["loadavg"]
    return TriageReport(
        release=system["release"],
        machine=system["machine"],
        nodename=system["nodename"],
        crash_time=crash_time,
        uptime=None if uptime_ns is None else uptime_ns / 1e9,
        uptime_source=system["uptime_source"],
        loadavg=None if loadavg is None else load_averages(loadavg),
        taint=system["taint"],
        taint_string=system["taint_string"],
        nr_cpus=system["nr_cpus"],
        possible_cpus=cpus("possible_cpus"),
        present_cpus=cpus("present_cpus"),
        online_cpus=cpus("online_cpus"),
        totalram_pages=system["totalram_pages"],
        panic_message=system["panic_message"],
        crash_cpu=system["panic_cpu"],
        crash_pid=None,
        crash_comm=None,
        backtrace=None,
        signature=None,
        task_count=len(procs),
        task_states=tuple(sorted(Counter(p.state for p in procs).items())),
        tasks_complete=procs.complete,
        tasks_reason=procs.reason,
        modules=tuple(modules),
        modules_complete=modules.complete,
        modules_reason=modules.reason,
        problems=tuple(system["problems"]),
    )
