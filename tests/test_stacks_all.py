"""Kvm.stack(pid) for every task and Kvm.signature() (SPEC §14), against triage.json.

For every dump of every boot of the corpus and the fleet (the split set opened whole), with
the System.map and with the dump's own kallsyms (CORE_SYMBOLS) where the kernel has its
tables: the truth's three sleeping tasks (unwound from the context the scheduler saved), the
idle tasks (pid 0, one per CPU: `cpu=` picks it), each CPU's running task (from its
NT_PRSTATUS note) and the crashed task by pid, frame names and pcs as the truth has them.
The signature is one value across every dump and every boot: the corpus's two boots are one
kernel and one bug, and the fleet's kernels crash the same way (sysrq-trigger `c`).

Debian's arm64 kernel keeps text symbols only in its kallsyms: with CORE_SYMBOLS the task
list (and so a pid's stack) needs `init_task` it lacks, and says so; the crashed stack and
the signature need no task list.

Hostile: a copy of a dump whose sleeping task's saved stack pointer is moved off its stack
(a clear error), and one whose saved return address is moved into a module's text (the
frame is named by the module's own symbols, through `struct module`'s kallsyms).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kvm_rs
import pytest
from kvm_rs._signature import signature, signature_names, strip_suffixes
from test_stack import DUMPS, NO_CORE_KALLSYMS, _core, _exec_file, _source, _triage

if TYPE_CHECKING:
    from conftest import Corpus

#: sha1("sysrq_handle_crash\n__handle_sysrq\nwrite_sysrq_trigger\nproc_reg_write\n"
#: "vfs_write\nksys_write"): every boot's crash is `echo c > /proc/sysrq-trigger`.
SIGNATURE = "c1c70becaa25910a8d4a7206686d1acf5bc97c4e"
SIGNATURE_NAMES = [
    "sysrq_handle_crash",
    "__handle_sysrq",
    "write_sysrq_trigger",
    "proc_reg_write",
    "vfs_write",
    "ksys_write",
]
TEXT_ONLY = "no symbol init_task (a symbol table of text symbols only"
CORPUS_ELF = "boot-nokaslr.qemu-elf.vmcore"
#: x86_64 kernel stacks (THREAD_SIZE).
STACK_SIZE = 16 << 10


def _real(stack: dict[str, Any]) -> list[tuple[str, int]]:
    """The truth's (name, pc) of each real frame (inlined frames share their caller's pc)."""
    return [(f["ksym"], int(f["pc"], 16)) for f in stack["frames"] if not f["inline"]]


def _got(frames: list[kvm_rs.Frame]) -> list[tuple[str | None, int]]:
    return [(f.symbol, f.pc) for f in frames]


def assert_stack(frames: list[kvm_rs.Frame], truth: dict[str, Any]) -> None:
    assert [f.symbol for f in frames] == truth["ksyms"]
    assert _got(frames) == _real(truth)
    assert all(f.reliable and f.module is None for f in frames)


@pytest.mark.parametrize("symbols", ["system.map", "core"])
@pytest.mark.parametrize(("source", "boot_name", "dump"), DUMPS)
def test_every_task_stack_equals_the_truth(
    request: pytest.FixtureRequest, source: str, boot_name: str, dump: str, symbols: str
) -> None:
    folder, boots = _source(request, source)
    boot = boots[boot_name]
    core = _core(folder, dump)
    if symbols == "core" and boot_name in NO_CORE_KALLSYMS:
        with pytest.raises(kvm_rs.KvmError, match="no kallsyms tables in VMCOREINFO"):
            kvm_rs.Kvm(kvm_rs.CORE_SYMBOLS, core)
        return
    execfile: Any = (
        str(_exec_file(request, source, dump)) if symbols == "system.map" else kvm_rs.CORE_SYMBOLS
    )
    with kvm_rs.Kvm(execfile, core) as kd:
        assert kd.signature() == SIGNATURE
        crashed = kd.stack()
        assert_stack(crashed, boot["crashed"]["stack"])
        if symbols == "core" and boot["arch"] == "aarch64":
            with pytest.raises(kvm_rs.KvmError, match=re.escape(TEXT_ONLY)):
                kd.stack(boot["crashed"]["pid"])
            return
        assert kd.stack(boot["crashed"]["pid"]) == crashed
        for task in boot["sleeping"]:
            assert_stack(kd.stack(task["pid"]), task["stack"])
        for idle in boot["idle_stacks"]:
            assert_stack(kd.stack(0, cpu=idle["cpu"]), idle["stack"])
        for cpu in boot["per_cpu"]:
            pid = cpu["current"]["pid"]
            frames = kd.stack(0, cpu=cpu["cpu"]) if pid == 0 else kd.stack(pid)
            assert_stack(frames, cpu["stack"])
        assert kd.stack(0) == kd.stack(0, cpu=0)


def test_the_signature_rules() -> None:
    def frames(*names: str | None, reliable: bool = True) -> list[kvm_rs.Frame]:
        return [kvm_rs.Frame(0, name, 0, None, reliable) for name in names]

    assert strip_suffixes("__handle_sysrq.cold") == "__handle_sysrq"
    assert strip_suffixes("el0_svc_common.constprop.0") == "el0_svc_common"
    assert strip_suffixes("f.isra.3") == "f" and strip_suffixes("f.part.12") == "f"
    assert strip_suffixes("f.constprop.0.isra.1.cold") == "f"
    assert strip_suffixes("f.cold.2") == "f" and strip_suffixes("cold") == "cold"
    assert strip_suffixes("f.isra") == "f.isra"
    # Everything up to the outermost machinery frame goes: here `die` below `panic`.
    stack = frames(
        "delay_tsc", "panic", "oops_end", "die", "do_trap", "a", "b.isra.0", "c", "d", "e", "f"
    )
    assert signature_names(stack) == ["do_trap", "a", "b", "c", "d", "e"]
    for name in ("crash_kexec", "__crash_kexec", "machine_kexec", "show_regs", "dump_stack_lvl"):
        assert signature_names(frames("x", name, "y")) == ["y"]
    # No machinery: the first six frames; unreliable frames left out; no name is `?`.
    stack = frames("a", None, "c") + frames("guess", reliable=False) + frames("d")
    assert signature_names(stack) == ["a", "?", "c", "d"]
    assert signature(frames()) == "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    # The real one.
    crash = frames("__delay_cycles", "__delay", "__const_udelay", "panic", "sysrq_handle_crash")
    crash += frames("__handle_sysrq.cold", "write_sysrq_trigger", "proc_reg_write", "vfs_write")
    crash += frames("ksys_write", "do_syscall_64")
    assert signature_names(crash) == SIGNATURE_NAMES
    assert signature(crash) == SIGNATURE


def test_every_boot_gives_one_signature(request: pytest.FixtureRequest) -> None:
    found = {}
    for source, boot_name, dump in DUMPS:
        folder, _ = _source(request, source)
        with kvm_rs.Kvm(str(_exec_file(request, source, dump)), _core(folder, dump)) as kd:
            found[boot_name] = kd.signature()
    assert set(found) == {b for s in ("corpus", "fleet") for b in _source(request, s)[1]}
    assert set(found.values()) == {SIGNATURE}


def test_pids_that_are_not_there_and_cpu_without_pid_0(corpus: Corpus) -> None:
    with kvm_rs.Kvm(str(corpus.system_map), str(corpus.dir / CORPUS_ELF)) as kd:
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.stack(99999)
        assert str(raised.value) == (
            f"{corpus.dir / CORPUS_ELF}: no backtrace: no task with pid 99999"
        )
        with pytest.raises(kvm_rs.KvmError, match=r"no backtrace: no task with pid -3$"):
            kd.stack(-3)
        with pytest.raises(
            kvm_rs.KvmError, match=r"no backtrace: no CPU 5: the kernel has 1 \(nr_cpu_ids\)$"
        ):
            kd.stack(0, cpu=5)
        with pytest.raises(ValueError, match=r"cpu=1 picks an idle task: give it with pid=0"):
            kd.stack(1, cpu=1)
        with pytest.raises(ValueError, match="negative"):
            kd.stack(0, cpu=-1)


def _saved_context(kd: kvm_rs.Kvm, pid: int, ret_addr: int) -> tuple[int, int, int]:
    """A blocked x86_64 task's (stack base, address of thread.sp, address of the saved
    frame's ret_addr), found without BTF: `task_struct.stack` is the fifth word of the 6.1
    task_struct (thread_info is 24 bytes, then __state), `thread.sp` the one word of the
    task pointing into that stack, and `ret_addr` the frame word holding the truth's first
    pc."""
    [task] = [p.task for p in kd.tasks() if p.pid == pid]
    words = struct.unpack("<1024Q", kd.read(task, 8192))
    stack = words[4]
    assert stack % STACK_SIZE == 0
    [index] = [i for i, w in enumerate(words) if stack < w < stack + STACK_SIZE]
    sp = words[index]
    frame = struct.unpack("<8Q", kd.read(sp, 64))
    return stack, task + 8 * index, sp + 8 * frame.index(ret_addr)


def _damaged(
    corpus: Corpus, tmp_path: Path, slot: int, value: Callable[[int], int]
) -> tuple[Path, int]:
    """A copy of the corpus ELF dump with one word of pid 2's saved context replaced (`slot`
    0 its `thread.sp`, 1 its frame's `ret_addr`) by `value` of the task's stack base; and
    that base."""
    boot = _triage(str(corpus.dir))["boots"]["boot-nokaslr"]
    [task] = [t for t in boot["sleeping"] if t["pid"] == 2]
    copy = tmp_path / CORPUS_ELF
    shutil.copyfile(corpus.dir / CORPUS_ELF, copy)
    with kvm_rs.Kvm(str(corpus.system_map), str(copy), None, os.O_RDWR) as kd:
        stack, *slots = _saved_context(kd, 2, _real(task["stack"])[0][1])
        assert kd.write(slots[slot], struct.pack("<Q", value(stack))) == 8
    return copy, stack


def test_a_saved_stack_pointer_off_the_stack_is_an_error(corpus: Corpus, tmp_path: Path) -> None:
    boot = _triage(str(corpus.dir))["boots"]["boot-nokaslr"]
    copy, stack = _damaged(corpus, tmp_path, 0, lambda stack: stack - 0x10000)
    with kvm_rs.Kvm(str(corpus.system_map), str(copy)) as kd:
        with pytest.raises(kvm_rs.KvmError) as raised:
            kd.stack(2)
        off = stack - 0x10000
        assert f"the saved stack pointer {off:#x} is not on the task's stack" in str(raised.value)
        # Other tasks are unharmed.
        assert_stack(kd.stack(7), boot["sleeping"][1]["stack"])


def test_a_frame_in_a_module_is_named_by_its_own_symbols(corpus: Corpus, tmp_path: Path) -> None:
    boot = _triage(str(corpus.dir))["boots"]["boot-nokaslr"]
    [module] = boot["modules"]
    base = int(module["text_base"], 16)
    copy, _ = _damaged(corpus, tmp_path, 1, lambda _: base + 0x21)
    with kvm_rs.Kvm(str(corpus.system_map), str(copy)) as kd:
        first = kd.stack(2)[0]
    # qemu_fw_cfg's text starts with fw_cfg_showrev (its sysfs `rev` attribute).
    assert first == kvm_rs.Frame(base + 0x21, "fw_cfg_showrev", 1, "qemu_fw_cfg", True)
