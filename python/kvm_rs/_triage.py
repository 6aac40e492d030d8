"""Triage records (SPEC §14): what the dump says about its tasks, read with BTF types and no
debug info."""

from __future__ import annotations

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
