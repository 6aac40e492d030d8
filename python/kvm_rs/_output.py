"""What the command line prints: every command's output is a sequence of records, and one
function renders a record as text (for people) or as one JSON line (for pipelines).

The JSON field names of every kind are listed here, in `FIELDS`, and nowhere else; the
README's table is this table, and a test checks every command's output against it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from ._handle import LogRecord, console_lines
from ._signature import signature_names
from ._triage import TriageReport

#: kind → its fields, in the order JSON prints them (after "kind").
FIELDS: Mapping[str, tuple[str, ...]] = {
    "info": (
        "path",
        "parts",
        "format",
        "compression",
        "machine",
        "osrelease",
        "build_id",
        "page_size",
        "kernel_offset",
        "pgtable_levels",
        "live",
        "truncated",
        "incomplete",
        "pfn_range",
        "exec_format",
        "vmcoreinfo_source",
        "vmcoreinfo",
    ),
    "symbol": ("path", "name", "value"),
    "read": ("path", "address", "size", "hex"),
    "log": ("seq", "ts", "level", "caller", "text"),
    "report": (
        "path",
        "parts",
        "ok",
        "error",
        "readable",
        "reason",
        "format",
        "compression",
        "machine",
        "osrelease",
        "build_id",
        "crash_time",
        "kernel_offset",
        "page_size",
        "dump_level",
        "incomplete",
        "truncated",
        "dumped_pages",
        "panic",
        "pfn_range",
        "exec_format",
        "vmcoreinfo_source",
        "crash_pid",
        "crash_comm",
        "backtrace",
        "signature",
        "crash_problems",
    ),
    "task": (
        "path",
        "pid",
        "tgid",
        "ppid",
        "comm",
        "state",
        "uid",
        "cpu",
        "on_cpu",
        "kthread",
        "task",
    ),
    "frame": ("path", "pid", "index", "pc", "symbol", "offset", "module", "reliable"),
    # The core file, then every field of Kvm.triage()'s report, in its order.
    "triage": ("path", *(f.name for f in dataclasses.fields(TriageReport))),
    "error": ("path", "error", "reason"),
    "summary": ("ok", "warned", "failed", "interrupted", "seconds"),
}

#: Fields that hold kernel addresses: strings "0x…" in JSON, which loses integers above 2^53.
ADDRESSES = frozenset({"kernel_offset", "value", "address", "task", "pc", "base", "module"})


@dataclass(frozen=True)
class Record:
    """One thing a command prints: its kind and exactly the fields `FIELDS` lists for it."""

    kind: str
    fields: Mapping[str, Any]

    def __post_init__(self) -> None:
        expected = FIELDS[self.kind]
        if tuple(self.fields) != expected:
            raise AssertionError(f"{self.kind} record fields {tuple(self.fields)} != {expected}")

    @classmethod
    def of(cls, kind: str, **values: Any) -> Record:
        """The record, its fields put in their listed order (missing ones an error)."""
        return cls(kind, {name: values[name] for name in FIELDS[kind]})

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    @property
    def is_error(self) -> bool:
        """What `-q` keeps: errors, and reports of dumps that failed."""
        return self.kind == "error" or (self.kind == "report" and not self["ok"])


def _json_value(name: str, value: Any) -> Any:
    """A field's value as JSON has it: addresses as "0x…" strings, at any depth (a triage
    report's modules and frames), records as objects, tuples as arrays."""
    if name in ADDRESSES and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:#x}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif isinstance(value, tuple) and hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return {key: _json_value(key, item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_json_value(name, item) for item in value]
    return value


def _hexdump(addr: int, data: bytes) -> Iterator[str]:
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        hex_part = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        yield f"{(addr + at) % (1 << 64):016x}  {hex_part:<47}  |{text}|"


def _info_text(fields: Mapping[str, Any]) -> Iterator[str]:
    for key, value in fields.items():
        if key == "vmcoreinfo":
            text = f"{len(value)} keys"
        elif key == "kernel_offset":
            text = f"{value:#x}"
        elif key == "parts":
            if len(value) <= 1:
                continue
            text = " ".join(value)
        elif key == "pfn_range" and value is not None:
            text = f"{value[0]:#x}-{value[1]:#x}"
        else:
            text = "-" if value is None else str(value)
        yield f"{key:<17} {text}"


def report_notes(fields: Mapping[str, Any]) -> list[str]:
    """What is wrong with, or special about, a dump that opened."""
    notes = []
    parts = fields["parts"]
    if len(parts) > 1:
        notes.append(f"split dump of {len(parts)} parts")
    elif fields["pfn_range"] is not None:
        start, end = fields["pfn_range"]
        notes.append(f"split part (pfn {start:#x}-{end:#x})")
    if fields["truncated"]:
        notes.append("truncated")
    if fields["incomplete"]:
        notes.append("incomplete")
    if not fields["readable"]:
        notes.append(f"unreadable: {fields['reason']}")
    return notes


def _report_text(fields: Mapping[str, Any]) -> str:
    if not fields["ok"]:
        error: str = fields["error"]
        path: str = fields["path"]
        # The message names the file at fault; the line starts with the dump it is about.
        if not error.startswith(f"{path}:"):
            error = f"{path}: {error}"
        if fields["truncated"] and "truncated" not in error:
            error += " [truncated]"
        return f"FAIL  {error}"
    notes = report_notes(fields)
    # A dump that opened but cannot be trusted whole is a warning, not an "ok".
    warn = fields["truncated"] or fields["incomplete"] or not fields["readable"]
    flags = f" [{'; '.join(notes)}]" if notes else ""
    names = " + ".join(fields["parts"]) if fields["parts"] else fields["path"]
    return (
        f"{'warn' if warn else 'ok':<4}  {names}: {fields['format']} "
        f"{fields['compression'] or '-'} {fields['machine'] or '-'} "
        f"{fields['osrelease'] or '-'}{flags} panic: {fields['panic'] or '-'}"
        f"{_crash_text(fields)}"
    )


def _crash_text(fields: Mapping[str, Any]) -> str:
    """`scan --triage`'s part of a report line: who crashed, where, and the signature."""
    if fields["crash_problems"] is None:
        return ""
    who = (
        "-"
        if fields["crash_pid"] is None
        else f"pid {fields['crash_pid']} ({fields['crash_comm']})"
    )
    where = signature_names(fields["backtrace"] or ())
    at = f" in {where[0]}" if where else ""
    short = fields["signature"][:12] if fields["signature"] else "-"
    problems = f" [{'; '.join(fields['crash_problems'])}]" if fields["crash_problems"] else ""
    return f" crash: {who}{at} sig {short}{problems}"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


#: `ps`'s columns: the header line of `kvm-rs ps`.
TASK_HEADER = f"{'PID':>7} {'TGID':>7} {'PPID':>7} ST {'CPU':>3} {'UID':>5} {'TASK':>18} COMM"


def _task_text(fields: Mapping[str, Any]) -> str:
    """One `ps` line; a kernel thread's name in brackets, as ps shows it."""
    comm = f"[{fields['comm']}]" if fields["kthread"] else fields["comm"]
    return (
        f"{fields['pid']:>7} {fields['tgid']:>7} {_dash(fields['ppid']):>7} "
        f"{fields['state']:<2} {_dash(fields['cpu']):>3} {_dash(fields['uid']):>5} "
        f"{fields['task']:#018x} {comm}"
    )


def _frame_text(fields: Mapping[str, Any]) -> str:
    """One frame as the kernel prints a trace: `? ` for one that is not reliable, the
    module in brackets."""
    where = "?" if fields["symbol"] is None else f"{fields['symbol']}+{fields['offset']:#x}"
    module = f" [{fields['module']}]" if fields["module"] else ""
    guess = "" if fields["reliable"] else "? "
    return f" #{fields['index']:<2} {fields['pc']:016x}  {guess}{where}{module}"


def _triage_text(fields: Mapping[str, Any]) -> Iterator[str]:
    """As crash's `sys`, then the crashed task's `bt`."""

    def row(label: str, value: object) -> str:
        return f"{label:>12}: {value}"

    yield row("DUMPFILE", fields["path"])
    yield row("KERNEL", _dash(fields["release"]))
    yield row("MACHINE", _dash(fields["machine"]))
    yield row("NODENAME", _dash(fields["nodename"]))
    uptime = fields["uptime"]
    if uptime is not None:
        hours, rest = divmod(int(uptime), 3600)
        yield row("UPTIME", f"{hours:02}:{rest // 60:02}:{rest % 60:02} ({uptime:.3f} s)")
    else:
        yield row("UPTIME", "-")
    loadavg = fields["loadavg"]
    yield row("LOAD AVERAGE", "-" if loadavg is None else ", ".join(f"{v:.2f}" for v in loadavg))
    states = ", ".join(f"{letter} {count}" for letter, count in fields["task_states"])
    incomplete = "" if fields["tasks_complete"] else f" [incomplete: {fields['tasks_reason']}]"
    yield row("TASKS", f"{fields['task_count']} ({states}){incomplete}")
    online = fields["online_cpus"]
    online_text = "-" if online is None else ",".join(map(str, online))
    yield row("CPUS", f"{_dash(fields['nr_cpus'])} (online {online_text})")
    pages = fields["totalram_pages"]
    yield row("MEMORY", "-" if pages is None else f"{pages} pages")
    who = ""
    if fields["crash_pid"] is not None:
        who = f", pid {fields['crash_pid']} ({fields['crash_comm']})"
    yield row("PANIC", f"{_dash(fields['panic_message'])} (CPU {_dash(fields['crash_cpu'])}{who})")
    yield row("TAINTED", _dash(fields["taint_string"]))
    names = " ".join(m.name for m in fields["modules"]) or "-"
    yield row("MODULES", names if fields["modules_complete"] else f"{names} [incomplete]")
    yield row("SIGNATURE", _dash(fields["signature"]))
    for problem in fields["problems"]:
        yield row("NOTE", problem)
    for index, frame in enumerate(fields["backtrace"] or ()):
        yield _frame_text({"index": index, **frame._asdict()})


def _text(record: Record) -> str:
    fields = record.fields
    kind = record.kind
    if kind == "info":
        return "\n".join(_info_text(fields))
    if kind == "symbol":
        value = fields["value"]
        return f"{'-' if value is None else f'{value:#018x}':<18} {fields['name']}"
    if kind == "read":
        return "\n".join(_hexdump(fields["address"], bytes.fromhex(fields["hex"])))
    if kind == "log":
        # ts is a whole number of microseconds (log_record), exactly recovered here.
        return "\n".join(console_lines(round(fields["ts"] * 1_000_000), fields["text"]))
    if kind == "report":
        return _report_text(fields)
    if kind == "task":
        return _task_text(fields)
    if kind == "frame":
        return _frame_text(fields)
    if kind == "triage":
        return "\n".join(_triage_text(fields))
    if kind == "error":
        return f"kvm-rs: {fields['error']}"
    if kind == "summary":
        interrupted = ", interrupted" if fields["interrupted"] else ""
        return (
            f"{fields['ok']} ok, {fields['warned']} warn, {fields['failed']} failed"
            f"{interrupted} ({fields['seconds']:.2f} s)"
        )
    raise AssertionError(f"no text for {kind}")


def error_record(path: str | None, message: str, reason: str | None = None) -> Record:
    """What went wrong, and with which core file (`path`)."""
    return Record.of("error", path=path, error=message, reason=reason)


def log_record(entry: LogRecord) -> Record:
    """A kernel log record, its time in seconds to the microsecond, as the console has it."""
    return Record.of(
        "log",
        seq=entry.seq,
        ts=(entry.ts_nsec // 1000) / 1_000_000,
        level=entry.level,
        caller=entry.caller,
        text=entry.text,
    )


def render(record: Record, as_json: bool) -> str:
    """The record as one JSON object (one line), or as the text a person reads."""
    if as_json:
        values = {name: _json_value(name, value) for name, value in record.fields.items()}
        return json.dumps({"kind": record.kind, **values})
    return _text(record)


class Output:
    """Where records go: stdout, except text-mode errors and summaries (stderr); `quiet`
    keeps only errors; `verbose` adds notes on stderr. Every line is flushed as it is
    written, so a pipeline (or a killed run) has every record printed so far."""

    def __init__(self, as_json: bool, quiet: bool = False, verbose: bool = False) -> None:
        self.as_json = as_json
        self.quiet = quiet
        self.verbose = verbose

    def emit(self, record: Record) -> None:
        if self.quiet and not record.is_error:
            return
        to_stderr = not self.as_json and record.kind in ("error", "summary")
        self._write(sys.stderr if to_stderr else sys.stdout, render(record, self.as_json))

    def write_line(self, text: str) -> None:
        """A line of text on stdout that is no record (a table's header)."""
        self._write(sys.stdout, text)

    def note(self, text: str) -> None:
        """A `-v` line: what was opened, cache hits, timings (stderr, never JSON)."""
        if self.verbose:
            self._write(sys.stderr, f"kvm-rs: {text}")

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        stream.write(text + "\n")
        stream.flush()
