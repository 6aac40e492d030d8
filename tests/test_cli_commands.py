"""The `kvm-rs` console script's scan, nlist and read commands, run as a user runs them (a
subprocess), against the real corpus and truth.json.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from broken import make_broken
from clirun import expected_compression, kvm_rs_command, run

if TYPE_CHECKING:
    from conftest import Corpus

FORMATS = {"elf": "elf", "kdump-compressed": "kdump", "makedumpfile-flattened": "flattened"}
EXIT_FAILED = 1
EXIT_SOME_DUMPS_FAILED = 3
#: The kernel's kallsyms never lists its own tables, so `-N core` cannot find these.
NOT_IN_KALLSYMS = {"kallsyms_num_syms", "kallsyms_names"}
READ_SYMBOLS = ["linux_banner", "init_uts_ns", "init_task", "saved_command_line"]
#: "ADDR  hex bytes  |ascii|"
HEXDUMP_LINE = re.compile(r"([0-9a-f]{16})  ([0-9a-f]{2}(?: [0-9a-f]{2})*) *  \|(.*)\|")


def run_bytes(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*kvm_rs_command(), *map(str, args)], capture_output=True, timeout=120)


def json_lines(stdout: str, kind: str = "report") -> list[dict[str, Any]]:
    """The records of one kind among the JSON lines (every line must be JSON)."""
    lines = [json.loads(line) for line in stdout.splitlines()]
    return [line for line in lines if line["kind"] == kind]


def runtime(corpus: Corpus, dump_name: str, symbol: str) -> int:
    return int(corpus.dump_truth(dump_name)["symbols"][symbol]["runtime_address"], 16)


def truth_bytes(corpus: Corpus, dump_name: str, symbol: str) -> bytes:
    return bytes.fromhex(corpus.dump_truth(dump_name)["symbols"][symbol]["bytes"])


def parse_hexdump(stdout: str, start: int) -> bytes:
    """The bytes of a hexdump, checking each line's address and ASCII column."""
    data = b""
    for line in stdout.splitlines():
        match = HEXDUMP_LINE.fullmatch(line)
        assert match, f"not a hexdump line: {line!r}"
        addr, hex_part, text = match.groups()
        chunk = bytes.fromhex(hex_part)
        assert int(addr, 16) == start + len(data), line
        assert len(chunk) <= 16, line
        assert text == "".join(chr(b) if 32 <= b < 127 else "." for b in chunk), line
        data += chunk
    return data


# -- scan --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_dir(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("broken")
    return folder, make_broken(folder, corpus.dump("boot-nokaslr.mdf-d31-zlib.kdump"))


@pytest.fixture(scope="module")
def dump_paths(corpus: Corpus) -> dict[str, str]:
    """Corpus dump path → dump name."""
    return {str(corpus.dump(name)): name for name in corpus.dumps}


def assert_good_report(corpus: Corpus, name: str, report: dict[str, Any]) -> None:
    truth = corpus.dump_truth(name)
    assert report["ok"] is True, report
    assert report["error"] is None
    assert report["osrelease"] == truth["vmcoreinfo_OSRELEASE"]
    assert report["format"] == FORMATS[truth["format"]]
    assert report["compression"] == expected_compression(truth)
    assert int(report["kernel_offset"], 16) == int(truth["KERNELOFFSET"], 16)
    assert report["panic"] == "sysrq triggered crash"


def found_in_folder(broken: dict[str, str]) -> dict[str, str]:
    """The broken files a folder scan reports: all but text (SPEC 15: crash folders hold
    console logs and dmesg text beside the dump; they are skipped, not failures)."""
    return {path: message for path, message in broken.items() if not path.endswith(".txt")}


def test_scan_json_corpus_and_broken(
    corpus: Corpus, dump_paths: dict[str, str], broken_dir: tuple[Path, dict]
) -> None:
    folder, all_broken = broken_dir
    broken = found_in_folder(all_broken)
    result = run("scan", "--json", "--threads", "2", *dump_paths, folder)
    assert result.returncode == EXIT_SOME_DUMPS_FAILED, result.stderr
    reports = json_lines(result.stdout)
    paths = [r["path"] for r in reports]
    assert sorted(paths) == sorted([*dump_paths, *broken]), "one report per file"
    for report in reports:
        assert {"path", "ok", "error", "format", "compression", "osrelease"} <= set(report)
        if report["path"] in broken:
            assert report["ok"] is False
            assert report["error"] == broken[report["path"]]
            assert report["osrelease"] is None
        else:
            assert_good_report(corpus, dump_paths[report["path"]], report)


def test_scan_text_corpus_and_broken(
    corpus: Corpus, dump_paths: dict[str, str], broken_dir: tuple[Path, dict]
) -> None:
    folder, all_broken = broken_dir
    broken = found_in_folder(all_broken)
    result = run("scan", *dump_paths, folder)
    assert result.returncode == EXIT_SOME_DUMPS_FAILED, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(dump_paths) + len(broken), result.stdout
    for path, name in dump_paths.items():
        [line] = [line for line in lines if f" {path}:" in line]
        assert line.startswith("ok"), line
        assert corpus.dump_truth(name)["vmcoreinfo_OSRELEASE"] in line.split()
        assert "FAIL" not in line
    for message in broken.values():
        [line] = [line for line in lines if line.endswith(message)]
        assert line.startswith("FAIL"), line


def test_scan_reports_a_text_file_named_on_the_command_line(
    broken_dir: tuple[Path, dict],
) -> None:
    _, broken = broken_dir
    [(text, message)] = [(p, m) for p, m in broken.items() if p.endswith(".txt")]
    result = run("scan", "--json", text)
    assert result.returncode == EXIT_SOME_DUMPS_FAILED, result.stderr
    [report] = json_lines(result.stdout)
    assert (report["path"], report["ok"], report["error"]) == (text, False, message)


def test_scan_walks_folders_recursively(
    corpus: Corpus, dump_paths: dict[str, str], tmp_path: Path
) -> None:
    tree = tmp_path / "crash"
    expected = {}
    for path, name in dump_paths.items():
        boot = tree / corpus.dump_truth(name)["boot"] / "deep"
        boot.mkdir(parents=True, exist_ok=True)
        (boot / name).symlink_to(path)
        expected[str(boot / name)] = name
    result = run("scan", "--json", tree)
    assert result.returncode == 0, result.stdout + result.stderr
    reports = json_lines(result.stdout)
    assert sorted(r["path"] for r in reports) == sorted(expected)
    for report in reports:
        assert_good_report(corpus, expected[report["path"]], report)


def test_scan_all_good_exits_0(dump_paths: dict[str, str]) -> None:
    result = run("scan", *dump_paths)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(dump_paths)
    assert all(line.startswith("ok") for line in lines), result.stdout


def test_scan_one_broken_file_exits_3(broken_dir: tuple[Path, dict]) -> None:
    path, message = next(iter(broken_dir[1].items()))
    result = run("scan", "--json", path)
    assert result.returncode == EXIT_SOME_DUMPS_FAILED
    [report] = json_lines(result.stdout)
    assert report["path"] == path
    assert report["ok"] is False
    assert report["error"] == message


def test_scan_with_another_kernels_symbols_fails_every_dump(
    corpus: Corpus, dump_paths: dict[str, str]
) -> None:
    result = run("scan", "--json", "-N", corpus.kallsyms, *dump_paths)
    assert result.returncode == EXIT_SOME_DUMPS_FAILED
    reports = json_lines(result.stdout)
    assert len(reports) == len(dump_paths)
    for report in reports:
        assert report["ok"] is False
        assert f"{corpus.kallsyms}: does not match {report['path']} (" in report["error"]


def test_scan_with_system_map(corpus: Corpus, dump_paths: dict[str, str]) -> None:
    result = run("scan", "--json", "-N", corpus.system_map, *dump_paths)
    assert result.returncode == 0, result.stdout + result.stderr
    for report in json_lines(result.stdout):
        assert_good_report(corpus, dump_paths[report["path"]], report)


# -- nlist -------------------------------------------------------------------------------------


def nlist_symbols(corpus: Corpus, execfile: str) -> list[str]:
    names = list(corpus.truth["symbols"])
    return [n for n in names if n not in NOT_IN_KALLSYMS] if execfile == "core" else names


def exec_arg(corpus: Corpus, execfile: str) -> str:
    return "core" if execfile == "core" else str(corpus.exec_path(execfile))


@pytest.mark.parametrize("execfile", ["system.map", "core"])
def test_nlist_text(corpus: Corpus, dump_name: str, execfile: str) -> None:
    names = nlist_symbols(corpus, execfile)
    result = run("nlist", "-M", corpus.dump(dump_name), "-N", exec_arg(corpus, execfile), *names)
    assert result.returncode == 0, result.stderr
    expected = [f"0x{runtime(corpus, dump_name, name):016x} {name}" for name in names]
    assert result.stdout.splitlines() == expected


@pytest.mark.parametrize("execfile", ["vmlinux", "core"])
def test_nlist_json(corpus: Corpus, dump_name: str, execfile: str) -> None:
    names = nlist_symbols(corpus, execfile)
    result = run(
        "nlist", "--json", "-M", corpus.dump(dump_name), "-N", exec_arg(corpus, execfile), *names
    )
    assert result.returncode == 0, result.stderr
    expected = [{"name": n, "value": hex(runtime(corpus, dump_name, n))} for n in names]
    got = [{"name": r["name"], "value": r["value"]} for r in json_lines(result.stdout, "symbol")]
    assert got == expected


def test_nlist_missing_name_exits_1_but_prints_found(corpus: Corpus) -> None:
    name = "boot-kaslr.mdf-d31-snappy.kdump"
    args = ("nlist", "-M", corpus.dump(name), "-N", corpus.system_map)
    result = run(*args, "linux_banner", "no_such_symbol_xyz", "init_task")
    assert result.returncode == EXIT_FAILED
    lines = result.stdout.splitlines()
    assert f"0x{runtime(corpus, name, 'linux_banner'):016x} linux_banner" in lines
    assert f"0x{runtime(corpus, name, 'init_task'):016x} init_task" in lines
    assert not any(line.startswith("0x") and "no_such_symbol_xyz" in line for line in lines)

    result = run(*args, "--json", "linux_banner", "no_such_symbol_xyz", "init_task")
    assert result.returncode == EXIT_FAILED
    values = {r["name"]: r["value"] for r in json_lines(result.stdout, "symbol")}
    assert values["linux_banner"] == hex(runtime(corpus, name, "linux_banner"))
    assert values["init_task"] == hex(runtime(corpus, name, "init_task"))
    assert values["no_such_symbol_xyz"] is None
    [error] = json_lines(result.stdout, "error")
    assert error["error"] == "no_such_symbol_xyz: no such symbol"


# -- read --------------------------------------------------------------------------------------


def test_read_symbol_hexdump(corpus: Corpus, dump_name: str) -> None:
    symbol = "linux_banner"
    result = run("read", "-M", corpus.dump(dump_name), "-N", corpus.system_map, symbol, "64")
    assert result.returncode == 0, result.stderr
    start = runtime(corpus, dump_name, symbol)
    assert parse_hexdump(result.stdout, start) == truth_bytes(corpus, dump_name, symbol)
    assert len(result.stdout.splitlines()) == 4


def test_read_hex_address_json(corpus: Corpus, dump_name: str) -> None:
    for symbol in ("init_task", "init_uts_ns"):
        address = runtime(corpus, dump_name, symbol)
        result = run(
            "read", "--json", "-M", corpus.dump(dump_name), "-N", corpus.vmlinux, hex(address)
        )
        assert result.returncode == 0, result.stderr
        [record] = json_lines(result.stdout, "read")
        assert record == {
            "kind": "read",
            "path": str(corpus.dump(dump_name)),
            "address": hex(address),
            "size": 64,
            "hex": truth_bytes(corpus, dump_name, symbol).hex(),
        }


def test_read_raw_with_core_symbols(corpus: Corpus, dump_name: str) -> None:
    for symbol in ("init_uts_ns", "saved_command_line"):
        result = run_bytes("read", "--raw", "-M", corpus.dump(dump_name), "-N", "core", symbol)
        assert result.returncode == 0, result.stderr
        assert result.stdout == truth_bytes(corpus, dump_name, symbol)


@pytest.mark.parametrize("symbol", READ_SYMBOLS)
def test_read_symbol_and_address_agree(corpus: Corpus, symbol: str) -> None:
    name = "boot-kaslr.mdf-d31-snappy.kdump"
    address = runtime(corpus, name, symbol)
    by_name = run("read", "--json", "-M", corpus.dump(name), "-N", "core", symbol, "64")
    by_addr = run("read", "--json", "-M", corpus.dump(name), "-N", "core", f"{address:#x}")
    assert by_name.returncode == by_addr.returncode == 0, by_name.stderr + by_addr.stderr
    assert json_lines(by_name.stdout, "read") == json_lines(by_addr.stdout, "read")
    assert json_lines(by_name.stdout, "read")[0]["hex"] == truth_bytes(corpus, name, symbol).hex()


@pytest.mark.parametrize("execfile", ["system.map", "core"])
def test_read_unknown_symbol(corpus: Corpus, execfile: str) -> None:
    dump = corpus.dump("boot-nokaslr.mdf-d31-lzo.kdump")
    result = run("read", "-M", dump, "-N", exec_arg(corpus, execfile), "no_such_symbol_xyz")
    assert result.returncode == EXIT_FAILED
    assert result.stdout == ""
    assert "no_such_symbol_xyz: no such symbol" in result.stderr


def test_ctrl_c_during_scan_exits_130_without_a_traceback(corpus: Corpus) -> None:
    paths = [str(corpus.dump(name)) for name in corpus.dumps] * 3000
    child = subprocess.Popen(
        [*kvm_rs_command(), "scan", "--json", *paths],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starts background jobs with SIGINT ignored, and Python then keeps it
        # ignored: give the child the default, as a terminal's foreground command has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(1.0)
    child.send_signal(signal.SIGINT)
    try:
        _, stderr = child.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        raise
    assert child.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "kvm-rs: interrupted", stderr
    assert "Traceback" not in stderr
