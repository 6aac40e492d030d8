"""The command line as a pipeline uses it (SPEC 15): the console script run as a subprocess,
every record checked against the one table of JSON fields, every wrong argument a one-line
usage error, no traceback for any input, and scan streaming its reports."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kvm_rs
import pytest
from clirun import kvm_rs_command, run
from kvm_rs import _output, cli

if TYPE_CHECKING:
    from conftest import Corpus, Fleet

KDUMP = "boot-kaslr.mdf-d31-snappy.kdump"
BULLSEYE = "bullseye-a.mdf-d31-zlib.kdump"
README = Path(__file__).resolve().parents[1] / "README.md"


def records(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line, each one JSON object with a kind and exactly that kind's fields."""
    out = []
    for line in stdout.splitlines():
        record = json.loads(line)
        assert list(record) == ["kind", *_output.FIELDS[record["kind"]]], record
        out.append(record)
    return out


def of_kind(stdout: str, kind: str) -> list[dict[str, Any]]:
    return [record for record in records(stdout) if record["kind"] == kind]


# -- the JSON field table ------------------------------------------------------------------


def readme_table() -> dict[str, tuple[str, ...]]:
    """README's "JSON records" table: | `kind` | `field`, `field`, … |."""
    text = README.read_text()
    section = text.split("### JSON records", 1)[1].split("\n#", 1)[0]
    table = {}
    for line in section.splitlines():
        match = re.fullmatch(r"\| `(\w+)` \| (.*) \|", line.strip())
        if match:
            table[match.group(1)] = tuple(re.findall(r"`(\w+)`", match.group(2)))
    return table


def test_readme_lists_every_kind_and_field() -> None:
    assert readme_table() == dict(_output.FIELDS)


def test_report_fields_are_the_scan_reports() -> None:
    fields = {f.name for f in kvm_rs.ScanReport.__dataclass_fields__.values()}
    assert fields == set(_output.FIELDS["report"])


def test_every_command_prints_only_listed_fields(corpus: Corpus, tmp_path: Path) -> None:
    dump = str(corpus.dump(KDUMP))
    seen = set()
    for args in (
        ["info", "-M", dump],
        ["nlist", "-M", dump, "jiffies", "no_such_symbol"],
        ["read", "-M", dump, "linux_banner", "32"],
        ["dmesg", "-M", dump],
        ["ps", "-M", dump],
        ["bt", "-M", dump],
        ["triage", "-M", dump],
        ["scan", dump, str(tmp_path / "missing")],
        ["info", "-M", str(tmp_path / "missing")],
    ):
        result = run(*args, "--json")
        assert result.returncode in (0, 1, 3), result.stderr
        seen |= {record["kind"] for record in records(result.stdout)}
    assert seen == set(_output.FIELDS)


def test_addresses_are_strings(corpus: Corpus) -> None:
    """jq prints 18446744072264645000 for the number 0xffffffffa9e079c0."""
    dump = corpus.dump(KDUMP)
    jiffies = corpus.dump_truth(KDUMP)["symbols"]["jiffies"]["runtime_address"]
    [symbol] = of_kind(run("nlist", "--json", "-M", dump, "jiffies").stdout, "symbol")
    assert symbol["value"] == hex(int(jiffies, 16))
    [info] = of_kind(run("info", "--json", "-M", dump).stdout, "info")
    assert info["kernel_offset"] == hex(int(corpus.dump_truth(KDUMP)["KERNELOFFSET"], 16))
    [read] = of_kind(run("read", "--json", "-M", dump, "jiffies", "8").stdout, "read")
    assert read["address"] == hex(int(jiffies, 16))


def test_path_names_the_core_file_everywhere(corpus: Corpus) -> None:
    dump = str(corpus.dump(KDUMP))
    for args in (["info"], ["nlist", "jiffies"], ["read", "jiffies"]):
        [record] = records(run(*args, "--json", "-M", dump).stdout)
        assert record["path"] == dump, record
    [report] = of_kind(run("scan", "--json", dump).stdout, "report")
    assert report["path"] == dump


def test_errors_are_json_too(corpus: Corpus, tmp_path: Path) -> None:
    missing = tmp_path / "vmcore"
    result = run("info", "--json", "-M", missing)
    assert result.returncode == 1
    assert records(result.stdout) == [
        {
            "kind": "error",
            "path": str(missing),
            "error": f"{missing}: No such file or directory",
            "reason": None,
        }
    ]
    assert result.stderr == ""
    # A read that fails names why (the read reasons of SPEC 13).
    result = run("read", "--json", "-M", corpus.dump(KDUMP), "0x10", "8")
    assert result.returncode == 1
    [error] = records(result.stdout)
    assert error["kind"] == "error" and error["reason"] == "not mapped", error


def test_dmesg_json_has_sequence_level_and_time(corpus: Corpus) -> None:
    logs = of_kind(run("dmesg", "--json", "-M", corpus.dump(KDUMP)).stdout, "log")
    assert len(logs) > 100
    first = logs[0]
    assert (first["seq"], first["ts"], first["caller"]) == (0, 0.0, "T0")
    assert first["text"].startswith("Linux version 6.1.0-56-amd64")
    assert any(log["ts"] > 1.0 for log in logs)
    assert {log["level"] for log in logs} >= {6}


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == f"kvm-rs {kvm_rs.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", kvm_rs.__version__)


# -- symbols: the dump's own by default -------------------------------------------------------


def test_no_exec_file_means_the_dumps_kallsyms(corpus: Corpus) -> None:
    """Without -N, -M once opened the host's /proc/kallsyms and failed on every dump."""
    dump = corpus.dump(KDUMP)
    jiffies = corpus.dump_truth(KDUMP)["symbols"]["jiffies"]["runtime_address"]
    result = run("nlist", "-M", dump, "jiffies")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{int(jiffies, 16):#018x} jiffies\n"
    for command in (["info"], ["dmesg"], ["read", "linux_banner"]):
        result = run(*command, "-M", dump)
        assert result.returncode == 0, (command, result.stderr)


def test_pre_6_0_dump_without_exec_file_says_to_give_one(fleet: Fleet) -> None:
    result = run("nlist", "-M", fleet.dump(BULLSEYE), "jiffies")
    assert result.returncode == 1
    assert result.stdout == ""
    first, hint = result.stderr.splitlines()
    assert "no kallsyms tables in VMCOREINFO (kernel before 6.0)" in first
    assert "-N" in hint


# -- usage errors: one line, exit 2 ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["read", "-M", "x", "--", "0xdeadbeefdeadbeefdead", "16"],
        ["read", "-M", "x", "-1", "16"],
        ["read", "-M", "x", "0", str(2**64)],
        ["read", "-M", "x", "0", "lots"],
        ["read", "-M", "x", "--raw", "--json", "0"],
        ["read", "-M", "x", "sym+zz"],
        ["scan", "--threads", "0", "x"],
        ["scan", "--threads", "two", "x"],
        ["info", "-M", ""],
        ["info", "-N", "", "-M", "x"],
        ["info", "-q", "-v", "-M", "x"],
        ["info", "--vmcoreinfo", "/nonexistent/vmcoreinfo", "-M", "x"],
        ["frobnicate"],
        [],
    ],
)
def test_wrong_arguments_are_one_line_usage_errors(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("kvm-rs"), line
    assert "Traceback" not in result.stderr


def test_scan_help_states_the_symbol_default() -> None:
    result = run("scan", "--help")
    assert result.returncode == 0
    assert "each dump's own kallsyms" in " ".join(result.stdout.split())


# -- ps and bt ---------------------------------------------------------------------------------


def triage_truth(corpus: Corpus, dump: str) -> dict[str, Any]:
    truth = json.loads((corpus.dir / "triage.json").read_text())
    boot = corpus.dump_truth(dump)["boot"]
    return truth["boots"][boot]  # type: ignore[no-any-return]


def test_ps_lists_the_truths_tasks(corpus: Corpus) -> None:
    result = run("ps", "-M", corpus.dump(KDUMP))
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["PID", "TGID", "PPID", "ST", "CPU", "UID", "TASK", "COMM"]
    truth = triage_truth(corpus, KDUMP)["tasks"]
    got = [line.split() for line in lines]
    assert [(int(f[0]), int(f[1]), f[3]) for f in got] == [
        (t["pid"], t["tgid"], t["state"]) for t in truth
    ]
    tasks = of_kind(run("ps", "--json", "-M", corpus.dump(KDUMP)).stdout, "task")
    assert [(t["pid"], t["ppid"], t["comm"]) for t in tasks] == [
        (t["pid"], t["ppid"], t["comm"]) for t in truth
    ]
    assert all(t["task"].startswith("0xffff") for t in tasks)


def test_ps_of_a_dump_that_lost_a_task_says_so(fleet: Fleet) -> None:
    result = run("ps", "--json", "-M", fleet.dump("trixie-a.mdf-d31-zlib.kdump"))
    assert result.returncode == 1
    lines = records(result.stdout)
    assert len([r for r in lines if r["kind"] == "task"]) == 49
    assert lines[-1]["kind"] == "error" and lines[-1]["reason"] == "incomplete"
    assert lines[-1]["error"].startswith("task list incomplete: ")


def test_bt_prints_the_crashed_tasks_frames(corpus: Corpus) -> None:
    truth = triage_truth(corpus, KDUMP)["crashed"]["stack"]["ksyms"]
    result = run("bt", "-M", corpus.dump(KDUMP))
    assert result.returncode == 0, result.stderr
    names = [line.split()[2].split("+")[0] for line in result.stdout.splitlines()]
    assert names == truth
    frames = of_kind(run("bt", "--json", "-M", corpus.dump(KDUMP)).stdout, "frame")
    assert [f["symbol"] for f in frames] == truth
    assert [f["index"] for f in frames] == list(range(len(truth)))
    assert all(f["pc"].startswith("0xffffffff") and f["reliable"] for f in frames)


def test_triage_prints_the_report(corpus: Corpus) -> None:
    truth = triage_truth(corpus, KDUMP)
    [report] = records(run("triage", "--json", "-M", corpus.dump(KDUMP)).stdout)
    assert report["kind"] == "triage"
    assert report["release"] == truth["release"]
    assert report["panic_message"] == truth["panic"]
    assert report["task_count"] == len(truth["tasks"])
    assert [(m["name"], m["base"]) for m in report["modules"]] == [
        (m["name"], m["text_base"]) for m in truth["modules"]
    ]
    text = run("triage", "-M", corpus.dump(KDUMP)).stdout
    assert f"      KERNEL: {truth['release']}" in text.splitlines()
    assert f"       PANIC: {truth['panic']} (CPU 0" in text


def test_scan_triage_names_the_crash(corpus: Corpus, fleet: Fleet) -> None:
    """Every corpus dump: the crashed task, its frames as the truth names them, and one
    signature for both boots; a pre-6.0 dump without -N says why it has none."""
    dumps = [str(corpus.dump(name)) for name in corpus.dumps]
    bullseye = str(fleet.dump(BULLSEYE))
    result = run("scan", "--json", "--triage", *dumps, bullseye)
    assert result.returncode == 0, result.stderr
    reports = {r["path"]: r for r in of_kind(result.stdout, "report")}
    signatures = set()
    for name in corpus.dumps:
        report = reports[str(corpus.dump(name))]
        crashed = triage_truth(corpus, name)["crashed"]
        assert (report["crash_pid"], report["crash_comm"]) == (crashed["pid"], crashed["comm"])
        assert [f["symbol"] for f in report["backtrace"]] == crashed["stack"]["ksyms"]
        assert report["crash_problems"] == []
        signatures.add(report["signature"])
    with kvm_rs.Kvm(execfile=kvm_rs.CORE_SYMBOLS, corefile=dumps[0]) as kd:
        signature = kd.signature()
    assert signatures == {signature}
    old = reports[bullseye]
    assert (old["signature"], old["backtrace"], old["crash_pid"]) == (None, [], None)
    assert "give -N" in old["crash_problems"][0]
    plain = run("scan", "--triage", dumps[0]).stdout
    assert f"crash: pid 1 (init) in sysrq_handle_crash sig {signature[:12]}" in plain
    # Without --triage the fields are there, and null.
    [report] = of_kind(run("scan", "--json", dumps[0]).stdout, "report")
    assert report["signature"] is None and report["crash_problems"] is None


def test_bt_pid_is_a_usage_error_when_not_a_number() -> None:
    result = run("bt", "-M", "x", "init")
    assert result.returncode == 2
    assert "'init' is not a pid" in result.stderr


# -- core files that are not dumps -----------------------------------------------------------


def test_a_folder_as_core_file_says_what_to_do(tmp_path: Path) -> None:
    """SPEC 2 keeps libkvm's words ("not a kernel core file"); the CLI adds what to do."""
    result = run("info", "-M", tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"kvm-rs: {tmp_path}: not a kernel core file",
        f"kvm-rs: {tmp_path} is a folder: give a dump in it with -M, "
        f"or run: kvm-rs scan {tmp_path}",
    ]


def test_a_character_device_as_core_file_says_what_to_do() -> None:
    result = run("info", "-M", "/dev/null")
    assert result.returncode == 1
    first, hint = result.stderr.splitlines()
    assert first == "kvm-rs: /dev/null: not physical memory device"
    assert hint.startswith("kvm-rs: /dev/null is a character device; of those only /dev/mem")


# -- nlist and read messages ---------------------------------------------------------------


def test_nlist_names_each_missing_symbol(corpus: Corpus) -> None:
    result = run("nlist", "-M", corpus.dump(KDUMP), "jiffies", "nosuch_a", "nosuch_b")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "kvm-rs: nosuch_a: no such symbol",
        "kvm-rs: nosuch_b: no such symbol",
    ]


def test_read_symbol_plus_offset(corpus: Corpus) -> None:
    truth = corpus.dump_truth(KDUMP)["symbols"]["linux_banner"]
    result = run("read", "--json", "-M", corpus.dump(KDUMP), "linux_banner+0x10", "16")
    assert result.returncode == 0, result.stderr
    [read] = of_kind(result.stdout, "read")
    assert read["address"] == hex(int(truth["runtime_address"], 16) + 16)
    assert read["hex"] == truth["bytes"][32:64]


def test_big_read_is_streamed_in_bounded_pieces(corpus: Corpus) -> None:
    """A read of 2^63 bytes: the mapped ones print, then the error; memory stays bounded."""
    result = run("read", "--json", "-M", corpus.dump(KDUMP), "linux_banner", str(2**63))
    assert result.returncode == 1
    lines = records(result.stdout)
    reads = [r for r in lines if r["kind"] == "read"]
    assert reads and all(r["size"] <= cli.READ_CHUNK for r in reads)
    assert lines[-1]["kind"] == "error"


# -- scan --------------------------------------------------------------------------------------


def test_scan_with_a_missing_exec_file_says_so_once(corpus: Corpus, tmp_path: Path) -> None:
    dumps = [str(corpus.dump(name)) for name in corpus.dumps[:3]]
    result = run("scan", "-N", tmp_path / "nonexistent", *dumps)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"kvm-rs: {tmp_path / 'nonexistent'}: No such file or directory\n"


def test_scan_mismatch_line_starts_with_the_dump(corpus: Corpus) -> None:
    dump = str(corpus.dump(KDUMP))
    result = run("scan", "-N", corpus.kallsyms, dump)
    assert result.returncode == 3
    [line] = result.stdout.splitlines()
    assert line.startswith(f"FAIL  {dump}: {corpus.kallsyms}: does not match"), line


def test_scan_without_var_crash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(cli, "DEFAULT_SCAN_DIR", str(tmp_path / "crash"))
    assert cli.main(["scan"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"kvm-rs: {tmp_path / 'crash'}: no such folder: name the dumps or folders to scan\n"
    )


def cut(source: Path, to: Path, size: int) -> Path:
    with source.open("rb") as src:
        to.write_bytes(src.read(size))
    return to


def test_truncated_dumps_say_so(corpus: Corpus, tmp_path: Path) -> None:
    source = corpus.dump("boot-nokaslr.mdf-d31-zlib.kdump")
    head = cut(source, tmp_path / "head.kdump", 100_000)
    body = cut(source, tmp_path / "body.kdump", source.stat().st_size * 2 // 3)
    result = run("scan", "--json", head, body)
    assert result.returncode == 3
    body_report, head_report = sorted(of_kind(result.stdout, "report"), key=lambda r: r["path"])
    assert body_report["path"] == str(body)
    assert (body_report["ok"], body_report["truncated"]) == (True, True)
    assert (head_report["ok"], head_report["truncated"]) == (False, True)
    assert "truncated core" in head_report["error"]
    text = run("scan", head, body).stdout.splitlines()
    assert [line[:6] for line in sorted(text)] == ["FAIL  ", "warn  "]
    assert all("truncated" in line for line in text)


def test_scan_json_into_a_closed_pipe(corpus: Corpus) -> None:
    dumps = [str(corpus.dump(name)) for name in corpus.dumps] * 4
    result = subprocess.run(
        f"{' '.join(kvm_rs_command())} scan --json {' '.join(dumps)} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "Traceback" not in result.stderr and "Error" not in result.stderr, result.stderr
    [line] = result.stdout.splitlines()
    assert json.loads(line)["kind"] == "report"


def test_quiet_prints_only_failures(corpus: Corpus, tmp_path: Path) -> None:
    bad = tmp_path / "bad.vmcore"
    bad.write_bytes(b"\0" * 4096)
    result = run("scan", "-q", corpus.dump(KDUMP), bad)
    assert result.returncode == 3
    assert result.stdout == f"FAIL  {bad}: not a kernel core file\n"
    assert result.stderr == ""
    result = run("info", "-q", "-M", corpus.dump(KDUMP))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verbose_says_what_it_opened(corpus: Corpus) -> None:
    result = run("info", "-v", "-M", corpus.dump(KDUMP))
    assert result.returncode == 0
    opened, symbols = result.stderr.splitlines()
    assert re.fullmatch(
        rf"kvm-rs: opened {re.escape(str(corpus.dump(KDUMP)))}: kdump snappy x86_64 "
        r"6\.1\.0-56-amd64 in [0-9.]+ ms",
        opened,
    )
    assert symbols == (
        "kvm-rs: symbols: the dump's kallsyms (kallsyms); exec cache: 0 hits, 0 misses"
    )
    dumps = [str(corpus.dump(name)) for name in corpus.dumps]
    result = run("scan", "-v", "--threads", "1", "-N", corpus.system_map, *dumps)
    assert result.returncode == 0
    found = re.search(
        rf"scanned {len(dumps)} dumps in [0-9.]+ s \(1 threads\); "
        r"exec cache: (\d+) hits, (\d+) misses",
        result.stderr,
    )
    assert found, result.stderr
    # The System.map is parsed once; every dump's open finds it parsed.
    assert int(found.group(1)) >= len(dumps) and int(found.group(2)) == 1, result.stderr
    # A triage of 7 dumps of one build decodes its kallsyms names and BTF once: the other
    # six find both decoded.
    result = run("scan", "-v", "--threads", "1", "--triage", *dumps)
    assert result.returncode == 0, result.stderr
    assert "; build cache: 12 hits, 2 misses\n" in result.stderr, result.stderr


# -- crash folders ---------------------------------------------------------------------------


def kdump_tools_folder(root: Path, dump: Path) -> Path:
    """/var/crash as Debian's kdump-tools leaves it: a folder per crash with the dump and
    its dmesg, and the kexec command line beside them."""
    crash = root / "202612010512"
    crash.mkdir(parents=True)
    (crash / "dump.202612010512").symlink_to(dump)
    (crash / "dmesg.202612010512").write_text("[    0.000000] Linux version 6.1.0-56-amd64\n")
    (root / "kexec_cmd").write_text("/sbin/kexec -p --command-line=... /boot/vmlinuz\n")
    return root


def without_dac_override() -> list[str]:
    """Root reads a mode-000 folder anyway; without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH (setpriv, util-linux) it is refused as for anyone else."""
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_scan_kdump_tools_folder_is_one_ok_report(corpus: Corpus, tmp_path: Path) -> None:
    root = kdump_tools_folder(tmp_path / "crash", corpus.dump(KDUMP))
    result = run("scan", "--json", root)
    assert result.returncode == 0, result.stdout + result.stderr
    reports = of_kind(result.stdout, "report")
    assert [(r["path"], r["ok"], r["readable"]) for r in reports] == [
        (str(root / "202612010512" / "dump.202612010512"), True, True)
    ]
    [summary] = of_kind(result.stdout, "summary")
    assert (summary["ok"], summary["warned"], summary["failed"]) == (1, 0, 0)


def test_scan_names_a_folder_it_cannot_read(corpus: Corpus, tmp_path: Path) -> None:
    root = kdump_tools_folder(tmp_path / "crash", corpus.dump(KDUMP))
    locked = root / "202612020101"
    locked.mkdir()
    (locked / "dump.202612020101").write_bytes(b"\0" * 4096)
    locked.chmod(0)
    try:
        result = subprocess.run(
            [*without_dac_override(), *kvm_rs_command(), "scan", "--json", str(root)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        locked.chmod(0o755)
    assert result.returncode == 3, result.stdout + result.stderr
    reports = of_kind(result.stdout, "report")
    assert sorted((r["path"], r["ok"]) for r in reports) == [
        (str(root / "202612010512" / "dump.202612010512"), True),
        (str(locked), False),
    ]
    [failed] = [r for r in reports if not r["ok"]]
    assert failed["error"] == f"{locked}: Permission denied"


# -- scan streams ------------------------------------------------------------------------------


def many_small_dumps(folder: Path, count: int, dump: Path) -> list[str]:
    """`count` links to one small real dump: each a whole scan's work (open, the release
    read through the page tables, the log decoded), a millisecond or so."""
    folder.mkdir()
    names = []
    for index in range(count):
        path = folder / f"vmcore.{index:05d}"
        path.symlink_to(dump)
        names.append(str(path))
    return names


def test_scan_streams_and_stops_on_ctrl_c(corpus: Corpus, tmp_path: Path) -> None:
    """SIGINT after the first report line: exit within a second, 130, every line JSON, and
    fewer reports than files (the first came long before the last)."""
    files = many_small_dumps(
        tmp_path / "many", 3000, corpus.dump("boot-nokaslr.mdf-d31-zlib.kdump")
    )
    child = subprocess.Popen(
        [*kvm_rs_command(), "scan", "--json", "--threads", "1", *files],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert child.stdout is not None
    first = child.stdout.readline()
    child.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        rest, stderr = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        raise
    waited = time.monotonic() - sent
    assert child.returncode == 130, stderr
    assert waited < 1.0, f"exited {waited:.2f} s after SIGINT"
    lines = records(first + rest)
    reports = [line for line in lines if line["kind"] == "report"]
    assert 1 <= len(reports) < len(files)
    assert lines[-1] == {**lines[-1], "kind": "summary", "interrupted": True}
    assert stderr.splitlines()[-1] == "kvm-rs: interrupted"


# -- no traceback, whatever the arguments ------------------------------------------------------


def argument_vectors(corpus: Corpus, tmp_path: Path, count: int) -> list[list[str]]:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(text, folder / "dmesg.1")
    words = [
        "info", "nlist", "read", "dmesg", "scan", "ps", "bt", "triage", "-M", "-N", "--json",
        "--raw",
        "-q", "-v", "--threads", "--vmcoreinfo", "--version", "--help", "-h", "--", "-", "",
        "0", "-1",
        "0x", "0xffffffffffffffff", "0x10000000000000000", "1e9", "nan", "jiffies",
        "jiffies+", "jiffies+0x8", "+", "core", "/dev/null", "/proc/self/mem",
        "/nonexistent", str(text), str(folder), str(corpus.dump(KDUMP)),
        str(corpus.system_map), "\udcff", "é", "-Mx", "--json=1", "=", "%s", "99999999999",
    ]  # fmt: skip
    rng = random.Random(20261201)
    vectors = []
    for _ in range(count):
        vector = [rng.choice(["info", "nlist", "read", "dmesg", "scan", "ps", "bt", "triage"])]
        vector += [rng.choice(words) for _ in range(rng.randint(0, 6))]
        vectors.append(vector)
    return vectors


def test_no_traceback_for_random_arguments(corpus: Corpus, tmp_path: Path) -> None:
    vectors = argument_vectors(corpus, tmp_path, 200)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:surrogateescape"}

    def one(vector: list[str]) -> tuple[list[str], int, str]:
        result = subprocess.run(
            [*kvm_rs_command(), *vector],
            capture_output=True,
            timeout=60,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        return vector, result.returncode, result.stderr.decode("utf-8", "replace")

    with ThreadPoolExecutor(4) as pool:
        for vector, code, stderr in pool.map(one, vectors):
            assert "Traceback" not in stderr, (vector, stderr)
            assert code in (0, 1, 2, 3), (vector, code, stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
