"""Kvm.dmesg() and `kvm-rs dmesg`: the kernel log decoded from every corpus dump must hold the
guest's serial console's kernel lines, in order, line for line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import kvm_rs
import pytest
from clirun import run
from console import KERNEL_LINE, assert_ordered_subsequence, kernel_lines

if TYPE_CHECKING:
    from conftest import Corpus

PANIC_TRAILER = "---[ end Kernel panic - not syncing: sysrq triggered crash ]---"


def console_kernel_lines(corpus: Corpus, dump_name: str) -> list[str]:
    """The kernel lines of the serial console of the dump's boot, exactly as printed."""
    path = corpus.path(f"{corpus.dump_truth(dump_name)['boot']}.console.log")
    return kernel_lines(Path(path), 300, strip=False)


def test_subsequence_helper_is_strict() -> None:
    assert_ordered_subsequence(["a", "c"], ["a", "b", "c"])
    with pytest.raises(AssertionError):
        assert_ordered_subsequence(["c", "a"], ["a", "b", "c"])
    with pytest.raises(AssertionError):
        assert_ordered_subsequence(["a "], ["a"])


@pytest.mark.parametrize("execfile", ["system.map", "core"])
def test_api_dmesg_holds_the_console(corpus: Corpus, dump_name: str, execfile: str) -> None:
    exec_arg = corpus.system_map if execfile == "system.map" else kvm_rs.CORE_SYMBOLS
    with kvm_rs.Kvm(execfile=exec_arg, corefile=corpus.dump(dump_name)) as kd:
        lines = kd.dmesg()
    assert isinstance(lines, list)
    assert all(isinstance(line, str) for line in lines)
    assert_ordered_subsequence(console_kernel_lines(corpus, dump_name), lines)
    assert all(KERNEL_LINE.match(line) for line in lines), "a line without a timestamp"
    assert any(line.endswith(f"] {PANIC_TRAILER}") for line in lines)


def test_api_dmesg_is_the_same_with_every_exec_file(corpus: Corpus) -> None:
    dump = corpus.dump("boot-kaslr.mdf-d31-snappy.kdump")
    logs = []
    for execfile in (corpus.system_map, corpus.vmlinux, kvm_rs.CORE_SYMBOLS):
        with kvm_rs.Kvm(execfile=execfile, corefile=dump) as kd:
            logs.append(kd.dmesg())
    assert logs[0] == logs[1] == logs[2]


def test_dmesg_on_closed_handle_raises(corpus: Corpus) -> None:
    kd = kvm_rs.Kvm(execfile=corpus.system_map, corefile=corpus.dump(corpus.dumps[0]))
    kd.close()
    with pytest.raises(kvm_rs.KvmError):
        kd.dmesg()


def test_cli_dmesg_holds_the_console(corpus: Corpus, dump_name: str) -> None:
    result = run("dmesg", "-M", str(corpus.dump(dump_name)), "-N", str(corpus.system_map))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.endswith("\n")
    lines = result.stdout.split("\n")[:-1]
    assert_ordered_subsequence(console_kernel_lines(corpus, dump_name), lines)
    assert any(line.endswith(f"] {PANIC_TRAILER}") for line in lines)


def test_cli_dmesg_json(corpus: Corpus, dump_name: str) -> None:
    dump = corpus.dump(dump_name)
    result = run("dmesg", "-M", str(dump), "-N", str(corpus.system_map), "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records
    assert all(
        list(record) == ["kind", "seq", "ts", "level", "caller", "text"] for record in records
    )
    assert all(record["kind"] == "log" for record in records)
    seqs = [record["seq"] for record in records]
    assert seqs == sorted(set(seqs)), "sequence numbers increase"
    assert {record["level"] for record in records} <= set(range(8))
    # 6.1's ring names every record's caller: a task (T<pid>) or, outside one, a CPU.
    assert all(re.fullmatch(r"[TC][0-9]+", record["caller"]) for record in records)
    assert records[0]["caller"] == "T0"  # the boot CPU's first lines, from the idle task
    with kvm_rs.Kvm(execfile=corpus.system_map, corefile=dump) as kd:
        ring = kd.log()
        lines = kd.dmesg()
    assert [r["text"] for r in records] == [r.text for r in ring]
    assert [r["ts"] for r in records] == [r.ts_nsec // 1000 / 1e6 for r in ring]
    assert_ordered_subsequence(console_kernel_lines(corpus, dump_name), lines)
    text = run("dmesg", "-M", str(dump), "-N", str(corpus.system_map))
    assert text.stdout.splitlines() == lines


def test_cli_dmesg_with_core_symbols(corpus: Corpus) -> None:
    name = "boot-kaslr.mdf-d31-snappy.kdump"
    result = run("dmesg", "-M", str(corpus.dump(name)), "-N", "core")
    assert result.returncode == 0, result.stderr
    assert_ordered_subsequence(console_kernel_lines(corpus, name), result.stdout.split("\n"))


def test_cli_dmesg_bad_core(corpus: Corpus, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is a text file\n")
    result = run("dmesg", "-M", str(bad), "-N", str(corpus.system_map))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{bad}: not a kernel core file" in result.stderr
