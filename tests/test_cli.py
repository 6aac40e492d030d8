"""The `kvm-rs` console script, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from clirun import run

if TYPE_CHECKING:
    from conftest import Corpus

FORMATS = {"elf": "elf", "kdump-compressed": "kdump", "makedumpfile-flattened": "flattened"}
KDUMP = "boot-kaslr.mdf-d31-snappy.kdump"


@pytest.mark.parametrize("dump", [KDUMP, "boot-nokaslr.qemu-kdump-zlib.vmcore"])
def test_info_json(corpus: Corpus, dump: str) -> None:
    truth = corpus.dump_truth(dump)
    result = run("info", "-M", str(corpus.dump(dump)), "-N", str(corpus.system_map), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["osrelease"] == truth["vmcoreinfo_OSRELEASE"]
    assert info["format"] == FORMATS[truth["format"]]
    assert info["compression"] == ("snappy" if dump == KDUMP else "zlib")
    assert int(info["kernel_offset"], 16) == int(truth["KERNELOFFSET"], 16)
    assert info["build_id"] == corpus.build_id
    assert result.stderr == ""


def test_info_text(corpus: Corpus) -> None:
    truth = corpus.dump_truth(KDUMP)
    result = run("info", "-M", str(corpus.dump(KDUMP)), "-N", str(corpus.vmlinux))
    assert result.returncode == 0, result.stderr
    assert truth["vmcoreinfo_OSRELEASE"] in result.stdout
    assert truth["KERNELOFFSET"] in result.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)


def test_bad_core_file(corpus: Corpus, some_file: Path) -> None:
    result = run("info", "-M", str(some_file), "-N", str(corpus.system_map))
    assert result.returncode == 1
    assert f"{some_file}: not a kernel core file" in result.stderr
    assert result.stdout == ""


def test_missing_exec_file(corpus: Corpus, tmp_path: Path) -> None:
    missing = tmp_path / "no-vmlinux"
    result = run("info", "-M", str(corpus.dump(KDUMP)), "-N", str(missing), "--json")
    assert result.returncode == 1
    [error] = [json.loads(line) for line in result.stdout.splitlines()]
    assert error["kind"] == "error"
    assert error["path"] == str(corpus.dump(KDUMP))
    assert error["error"] == f"{missing}: No such file or directory"
    result = run("info", "-M", str(corpus.dump(KDUMP)), "-N", str(missing))
    assert result.returncode == 1
    assert result.stderr == f"kvm-rs: {missing}: No such file or directory\n"
    assert result.stdout == ""


def test_mismatched_exec_file(corpus: Corpus) -> None:
    result = run("info", "-M", str(corpus.dump(KDUMP)), "-N", str(corpus.kallsyms))
    assert result.returncode == 1
    assert (
        f"{corpus.kallsyms}: does not match {corpus.dump(KDUMP)} "
        "(SYMBOL(_stext): 0xffffffff81000000 != 0xffffffffa8400000)"
    ) in result.stderr


def test_bad_file_without_corpus(some_file: Path, tmp_path: Path) -> None:
    exec_path = tmp_path / "System.map"
    exec_path.write_text("ffffffff81000000 T _stext\n")
    result = run("info", "-M", str(some_file), "-N", str(exec_path))
    assert result.returncode == 1
    assert f"{some_file}: not a kernel core file" in result.stderr


def test_live_kernel_by_default() -> None:
    """With no -M the running kernel is opened through /proc/kcore; this machine has none
    (or this user may not read it): the message names /proc/kcore."""
    result = run("info")
    if os.path.exists("/proc/kcore") and result.returncode == 0:
        assert "/proc/kcore" in result.stdout
    else:
        assert result.returncode == 1
        assert "/proc/kcore" in result.stderr
        assert result.stdout == ""


def test_usage_error() -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("kvm-rs: ") and "frobnicate" in line, line
