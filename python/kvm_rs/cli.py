"""kvm-rs: the command line, for people and for pipelines.

    kvm-rs info  [-M COREFILE]... [-N EXECFILE] [--json] [-q|-v]
    kvm-rs nlist [-M COREFILE]... [-N EXECFILE] [--json] [-q|-v] NAME...
    kvm-rs read  [-M COREFILE]... [-N EXECFILE] [--json | --raw] [-q|-v] ADDRESS|SYMBOL [SIZE]
    kvm-rs dmesg [-M COREFILE]... [-N EXECFILE] [--json] [-q|-v]
    kvm-rs ps    [-M COREFILE]... [-N EXECFILE] [--json] [-q|-v]
    kvm-rs bt    [-M COREFILE]... [-N EXECFILE] [--json] [-q|-v] [PID]
    kvm-rs triage [-M COREFILE]... [-N EXECFILE] [--json] [-q|-v]
    kvm-rs scan  [-N EXECFILE] [--threads N] [--triage] [--json] [-q|-v] [PATH...]

-M names the core file (BSD's memory file; once per part of a split dump), -N the symbol
table (BSD's namelist), as in BSD's ps and vmstat. With no -M the running kernel
(/proc/kcore) is opened, as kvm_open(NULL, NULL, ...) does; with -M and no -N the dump's
own kallsyms tables are the symbols. What each command prints is a sequence of records
(kvm_rs._output), as text or, with --json, as JSON lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import NoReturn

from . import _native, paths
from ._handle import CORE_SYMBOLS, Kvm, _CoreSymbols
from ._output import TASK_HEADER, Output, Record, error_record, log_record
from ._scan import ScanReport, scan_iter
from .errors import KvmError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SOME_DUMPS_FAILED = 3
#: The shell's status for a command ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130

EPILOG = """\
exit status:
  0    success
  1    the dump could not be opened or read (the message says why, on stderr)
  2    usage error
  3    scan: at least one dump failed to open (each has its report)
  130  interrupted (Ctrl-C)
"""

#: Where the kdump tools (kdump-tools, kdump-utils) leave dumps.
DEFAULT_SCAN_DIR = "/var/crash"
#: How much `read` asks of the dump at a time: memory stays bounded for any SIZE.
READ_CHUNK = 1 << 16
#: Addresses and sizes are 64-bit.
ADDRESS_LIMIT = 1 << 64


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


class _Version(argparse.Action):
    """--version: read from the package metadata only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from . import __version__

        sys.stdout.write(f"kvm-rs {__version__}\n")
        parser.exit()


def _path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    return text


def _positive(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _pid(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pid") from None
    if not 0 <= value < 1 << 31:
        raise argparse.ArgumentTypeError(f"{text} is not a pid")
    return value


def _size(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size") from None
    if not 0 <= value < ADDRESS_LIMIT:
        raise argparse.ArgumentTypeError(f"{text} is not a size in the 64-bit address space")
    return value


def _address_syntax(text: str) -> str:
    """ADDRESS (any int literal) or SYMBOL[+OFFSET]: checked here, resolved once opened."""
    if not text:
        raise argparse.ArgumentTypeError("empty address")
    number = _parse_int(text)
    if number is not None and not 0 <= number < ADDRESS_LIMIT:
        raise argparse.ArgumentTypeError(f"{text} is outside the 64-bit address space")
    _, plus, offset = text.partition("+")
    if number is None and plus and _parse_int(offset) is None:
        raise argparse.ArgumentTypeError(f"{text!r}: the offset after + is not a number")
    return text


def _parse_int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def _add_common(parser: argparse.ArgumentParser, core: bool = True) -> None:
    if core:
        parser.add_argument(
            "-M",
            dest="corefile",
            metavar="COREFILE",
            action="append",
            type=_path,
            help="core file: a crash dump or /proc/kcore (default: the running kernel); "
            "give it once per part of a split dump",
        )
        symbols_default = (
            "default: with -M, the dump's own kallsyms tables ('core'); without, "
            "/proc/kallsyms, else the running kernel's vmlinux or System.map"
        )
    else:
        symbols_default = "default: each dump's own kallsyms tables ('core')"
    parser.add_argument(
        "-N",
        dest="execfile",
        metavar="EXECFILE",
        type=_path,
        help=f"symbol table: vmlinux, System.map or kallsyms ({symbols_default})",
    )
    parser.add_argument(
        "--vmcoreinfo",
        metavar="FILE",
        type=_path,
        help="VMCOREINFO text (KEY=VALUE lines) to use instead of the dump's own",
    )
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    loudness.add_argument(
        "-v", "--verbose", action="store_true", help="say what was opened, cache hits, timings"
    )


def _add_json(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kvm-rs",
        description="Open Linux kernel crash dumps and the live kernel the BSD libkvm way.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="the version, and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return sub

    info = command("info", "what a dump is: format, release, build-id, KASLR offset")
    _add_common(info)
    _add_json(info)

    nlist = command("nlist", "runtime addresses of symbols")
    _add_common(nlist)
    _add_json(nlist)
    nlist.add_argument("names", nargs="+", metavar="NAME")

    read = command("read", "kernel memory, as a hexdump, JSON or raw bytes")
    _add_common(read)
    output = read.add_mutually_exclusive_group()
    _add_json(output)
    output.add_argument("--raw", action="store_true", help="the bytes themselves on stdout")
    read.add_argument(
        "address",
        metavar="ADDRESS|SYMBOL",
        type=_address_syntax,
        help="an address (0x…), a symbol, or SYMBOL+OFFSET",
    )
    read.add_argument(
        "size", nargs="?", default=64, type=_size, metavar="SIZE", help="bytes (default 64)"
    )

    dmesg = command("dmesg", "the kernel log of the dump")
    _add_common(dmesg)
    _add_json(dmesg)

    ps = command("ps", "the dump's tasks, read with the kernel's BTF types (no debug info)")
    _add_common(ps)
    _add_json(ps)

    bt = command("bt", "a task's backtrace (default: the task that crashed), no debug info")
    _add_common(bt)
    _add_json(bt)
    bt.add_argument(
        "pid", nargs="?", type=_pid, default=None, help="the task (default: the one that crashed)"
    )

    triage = command("triage", "what crashed and the system it ran on, as crash's sys and bt")
    _add_common(triage)
    _add_json(triage)

    scan = command("scan", "validate many dumps in parallel; exit status 3 if any failed")
    _add_common(scan, core=False)
    _add_json(scan)
    scan.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        type=_path,
        help=f"dumps, split parts or crash folders (default {DEFAULT_SCAN_DIR})",
    )
    scan.add_argument(
        "--threads", type=_positive, default=None, help="worker threads (default: one per CPU)"
    )
    scan.add_argument(
        "--triage",
        action="store_true",
        help="also name the task that crashed, its backtrace and the crash signature",
    )
    return parser


# -- opening -----------------------------------------------------------------------------


def _shown(args: argparse.Namespace) -> str:
    """The core file as records name it (`path`): the first part of a split dump."""
    given: list[str] | None = args.corefile
    return given[0] if given else paths._PATH_MEM


def _vmcoreinfo(args: argparse.Namespace) -> bytes | None:
    """The --vmcoreinfo file's text; a file that cannot be read is a usage error."""
    if args.vmcoreinfo is None:
        return None
    try:
        with open(args.vmcoreinfo, "rb") as file:
            return file.read()
    except OSError as error:
        sys.stderr.write(f"kvm-rs: --vmcoreinfo {args.vmcoreinfo}: {error.strerror}\n")
        raise SystemExit(EXIT_USAGE) from None


def _execfile(args: argparse.Namespace) -> str | _CoreSymbols | None:
    """-N as given; 'core', or nothing with -M, is the dump's own kallsyms."""
    if args.execfile == "core" or (args.execfile is None and args.corefile):
        return CORE_SYMBOLS
    return args.execfile  # type: ignore[no-any-return]


def _open(args: argparse.Namespace, out: Output) -> Kvm:
    given: list[str] | None = args.corefile
    corefile: str | list[str] | None = None
    if given:
        corefile = given[0] if len(given) == 1 else given
    execfile = _execfile(args)
    started = time.perf_counter()
    kd = Kvm(execfile=execfile, corefile=corefile, vmcoreinfo=_vmcoreinfo(args))
    if out.verbose:
        elapsed = (time.perf_counter() - started) * 1000
        info = kd.info
        symbols = "the dump's kallsyms" if execfile is CORE_SYMBOLS else execfile or "default"
        out.note(
            f"opened {' + '.join(given or [paths._PATH_MEM])}: {info.format} "
            f"{info.compression or '-'} {info.machine or '-'} {info.osrelease or '-'} "
            f"in {elapsed:.1f} ms"
        )
        hits, misses = _native.exec_cache_stats()
        out.note(
            f"symbols: {symbols} ({info.exec_format or 'none'}); "
            f"exec cache: {hits} hits, {misses} misses"
        )
    return kd


def _error(args: argparse.Namespace, error: KvmError) -> Record:
    return error_record(_shown(args), error.message, error.reason)


def _hint(args: argparse.Namespace, error: KvmError) -> str | None:
    """What the user can do about an error, where the message alone does not say."""
    if args.corefile:
        return _core_hint(args, error)
    if not os.path.exists(paths._PATH_MEM):
        return (
            f"{paths._PATH_MEM} does not exist: the kernel lacks CONFIG_PROC_KCORE, "
            "or /proc is not mounted; give a dump with -M"
        )
    if error.errno in (1, 13) and os.geteuid() != 0:
        return f"reading {paths._PATH_MEM} needs root (CAP_SYS_RAWIO): run as root, or give -M"
    return None


def _core_hint(args: argparse.Namespace, error: KvmError) -> str | None:
    """SPEC 2 words these as libkvm does; say what the file is and what to give instead."""
    if args.execfile is None and "no kallsyms tables" in error.message:
        return "name the kernel's System.map or vmlinux with -N"
    path = error.filename
    if path is None or not error.message.startswith(f"{path}: not "):
        return None
    if os.path.isdir(path):
        return f"{path} is a folder: give a dump in it with -M, or run: kvm-rs scan {path}"
    if error.message.endswith("not physical memory device"):
        return (
            f"{path} is a character device; of those only {paths._PATH_DEVMEM} is the "
            f"running kernel's memory: give a dump file, or no -M for {paths._PATH_MEM}"
        )
    return None


# -- the commands ------------------------------------------------------------------------


def _info(kd: Kvm, args: argparse.Namespace, out: Output) -> int:
    info = kd.info.as_dict()
    info["parts"] = tuple(args.corefile or [paths._PATH_MEM])
    out.emit(Record.of("info", path=_shown(args), **info))
    return EXIT_OK


def _nlist(kd: Kvm, args: argparse.Namespace, out: Output) -> int:
    found = kd.nlist(args.names)
    for name in args.names:
        out.emit(Record.of("symbol", path=_shown(args), name=name, value=found.get(name)))
    missing = [name for name in args.names if name not in found]
    for name in missing:
        out.emit(error_record(_shown(args), f"{name}: no such symbol"))
    return EXIT_FAILED if missing else EXIT_OK


def _resolve(kd: Kvm, text: str) -> int | None:
    """ADDRESS, SYMBOL or SYMBOL+OFFSET (checked by the parser) as an address."""
    number = _parse_int(text)
    if number is not None:
        return number
    name, _, offset = text.partition("+")
    base = kd.nlist([name]).get(name)
    if base is None:
        return None
    return (base + (_parse_int(offset) or 0)) % ADDRESS_LIMIT


def _chunks(addr: int, size: int) -> Iterator[tuple[int, int]]:
    """(address, length) pieces of at most READ_CHUNK, wrapping at the top of the space as
    the CPU does."""
    done = 0
    while done < size:
        length = min(READ_CHUNK, size - done)
        yield (addr + done) % ADDRESS_LIMIT, length
        done += length


def _read(kd: Kvm, args: argparse.Namespace, out: Output) -> int:
    addr = _resolve(kd, args.address)
    if addr is None:
        name = args.address.partition("+")[0]
        out.emit(error_record(_shown(args), f"{name}: no such symbol"))
        return EXIT_FAILED
    for at, length in _chunks(addr, args.size):
        failure = None
        try:
            data = kd.read(at, length)
        except KvmError as error:
            failure = error
            data = error.partial or b""
        if data:
            if args.raw:
                if not out.quiet:
                    sys.stdout.buffer.write(data)
                    sys.stdout.buffer.flush()
            else:
                out.emit(
                    Record.of("read", path=_shown(args), address=at, size=len(data), hex=data.hex())
                )
        if failure is not None:
            out.emit(_error(args, failure))
            return EXIT_FAILED
    return EXIT_OK


def _dmesg(kd: Kvm, args: argparse.Namespace, out: Output) -> int:
    for entry in kd.log():
        out.emit(log_record(entry))
    return EXIT_OK


def _ps(kd: Kvm, args: argparse.Namespace, out: Output) -> int:
    procs = kd.tasks()
    if not out.as_json and not out.quiet:
        out.write_line(TASK_HEADER)
    for proc in procs:
        out.emit(Record.of("task", path=_shown(args), **dataclasses.asdict(proc)))
    if procs.complete:
        return EXIT_OK
    # Every task it could reach is listed; what it could not is a failed read.
    out.emit(error_record(_shown(args), f"task list incomplete: {procs.reason}", "incomplete"))
    return EXIT_FAILED


def _bt(kd: Kvm, args: argparse.Namespace, out: Output) -> int:
    for index, frame in enumerate(kd.stack(args.pid)):
        out.emit(
            Record.of(
                "frame",
                path=_shown(args),
                pid=args.pid,
                index=index,
                **frame._asdict(),
            )
        )
    return EXIT_OK


def _triage(kd: Kvm, args: argparse.Namespace, out: Output) -> int:
    report = kd.triage()
    values = {f.name: getattr(report, f.name) for f in dataclasses.fields(report)}
    out.emit(Record.of("triage", path=_shown(args), **values))
    return EXIT_OK


def report_record(report: ScanReport) -> Record:
    return Record.of("report", **report.as_dict())


def _scan(args: argparse.Namespace, out: Output) -> int:
    if not args.paths and not os.path.isdir(DEFAULT_SCAN_DIR):
        message = f"{DEFAULT_SCAN_DIR}: no such folder: name the dumps or folders to scan"
        out.emit(error_record(DEFAULT_SCAN_DIR, message))
        return EXIT_FAILED
    execfile = CORE_SYMBOLS if args.execfile in (None, "core") else args.execfile
    started = time.perf_counter()
    counts = {"ok": 0, "warned": 0, "failed": 0}
    interrupted = False
    try:
        reports = scan_iter(
            args.paths or [DEFAULT_SCAN_DIR],
            execfile=execfile,
            threads=args.threads,
            vmcoreinfo=_vmcoreinfo(args),
            triage=args.triage,
        )
    except KvmError as error:
        # Nothing can be scanned (the -N file cannot be read): said once, not per dump.
        out.emit(error_record(args.execfile, error.message))
        return EXIT_FAILED
    try:
        for report in reports:
            out.emit(report_record(report))
            if not report.ok:
                counts["failed"] += 1
            elif report.truncated or report.incomplete or not report.readable:
                counts["warned"] += 1
            else:
                counts["ok"] += 1
    except KeyboardInterrupt:
        interrupted = True
    finally:
        reports.close()
    seconds = time.perf_counter() - started
    out.emit(Record.of("summary", **counts, interrupted=interrupted, seconds=round(seconds, 3)))
    hits, misses = _native.exec_cache_stats()
    build_hits, build_misses = _native.build_cache_stats()
    out.note(
        f"scanned {sum(counts.values())} dumps in {seconds:.2f} s "
        f"({args.threads or os.cpu_count() or 1} threads); "
        f"exec cache: {hits} hits, {misses} misses; "
        f"build cache: {build_hits} hits, {build_misses} misses"
    )
    if interrupted:
        raise KeyboardInterrupt
    return EXIT_SOME_DUMPS_FAILED if counts["failed"] else EXIT_OK


COMMANDS = {
    "info": _info,
    "nlist": _nlist,
    "read": _read,
    "dmesg": _dmesg,
    "ps": _ps,
    "bt": _bt,
    "triage": _triage,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Output(args.json, args.quiet, args.verbose)
    try:
        return _run(args, out)
    except KeyboardInterrupt:
        # Ctrl-C stops the native work within a tenth of a second; no traceback for it.
        sys.stderr.write("kvm-rs: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `kvm-rs dmesg | head`: the reader left; that is not an error of ours. Python's own
        # flush at exit would fail again: stdout goes to /dev/null from here on.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _run(args: argparse.Namespace, out: Output) -> int:
    if args.command == "scan":
        return _scan(args, out)
    try:
        with _open(args, out) as kd:
            return COMMANDS[args.command](kd, args, out)
    except KvmError as error:
        out.emit(_error(args, error))
        hint = _hint(args, error)
        if hint:
            sys.stderr.write(f"kvm-rs: {hint}\n")
        return EXIT_FAILED
