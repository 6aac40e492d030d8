"""kvm-rs: the command line, for people and for pipelines.

    kvm-rs info  [-N EXECFILE] [-M COREFILE] [--json]
    kvm-rs nlist [-N EXECFILE] [-M COREFILE] [--json] NAME...
    kvm-rs read  [-N EXECFILE] [-M COREFILE] [--json | --raw] ADDRESS|SYMBOL [SIZE]
    kvm-rs dmesg [-N EXECFILE] [-M COREFILE] [--json]
    kvm-rs scan  [-N EXECFILE] [--json] [--threads N] [PATH...]

-N names the symbol table (BSD's namelist), -M the core file (BSD's memory file), as in
BSD's ps, vmstat and friends. With no -M the running kernel (/proc/kcore) is opened, as
kvm_open(NULL, NULL, ...) does. --json prints JSON lines, one object per record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from . import paths
from ._handle import CORE_SYMBOLS, Kvm, _CoreSymbols
from ._scan import ScanReport, scan
from .errors import KvmError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SOME_DUMPS_FAILED = 3

EPILOG = """\
exit status:
  0  success
  1  the dump could not be opened or read (the message says why, on stderr)
  2  usage error
  3  scan: at least one dump failed to open (each has its report)
  130  interrupted (Ctrl-C)
"""

#: Where the kdump tools (kdump-tools, kexec-tools) leave dumps.
DEFAULT_SCAN_DIR = "/var/crash"


def _add_files(parser: argparse.ArgumentParser, core: bool = True) -> None:
    parser.add_argument(
        "-N",
        dest="execfile",
        metavar="EXECFILE",
        help="symbol table: vmlinux, System.map or kallsyms (default: /proc/kallsyms, else "
        "the running kernel's vmlinux or System.map; 'core' = the dump's own kallsyms)",
    )
    if core:
        parser.add_argument(
            "-M",
            dest="corefile",
            metavar="COREFILE",
            action="append",
            help="core file: a crash dump or /proc/kcore (default: the running kernel); "
            "give it once per part of a split dump",
        )
    parser.add_argument(
        "--vmcoreinfo",
        metavar="FILE",
        help="VMCOREINFO text (KEY=VALUE lines) to use instead of the dump's own",
    )
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvm-rs",
        description="Open Linux kernel crash dumps and the live kernel the BSD libkvm way.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser(
        "info", help="what a dump is: format, release, build-id, KASLR offset", epilog=EPILOG
    )
    _add_files(info)

    nlist = commands.add_parser("nlist", help="runtime addresses of symbols", epilog=EPILOG)
    _add_files(nlist)
    nlist.add_argument("names", nargs="+", metavar="NAME")

    read = commands.add_parser("read", help="kernel memory, as a hexdump or raw", epilog=EPILOG)
    _add_files(read)
    read.add_argument("address", metavar="ADDRESS|SYMBOL", help="0x-hex address or a symbol")
    read.add_argument("size", nargs="?", default="64", metavar="SIZE", help="bytes (default 64)")
    read.add_argument("--raw", action="store_true", help="the bytes themselves on stdout")

    dmesg = commands.add_parser("dmesg", help="the kernel log of the dump", epilog=EPILOG)
    _add_files(dmesg)

    scan_cmd = commands.add_parser(
        "scan",
        help="validate many dumps in parallel; non-zero exit if any failed",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_files(scan_cmd, core=False)
    scan_cmd.add_argument(
        "paths", nargs="*", metavar="PATH", help=f"dumps or folders (default {DEFAULT_SCAN_DIR})"
    )
    scan_cmd.add_argument("--threads", type=int, default=None, help="worker threads")
    return parser


def _execfile(value: str | None) -> str | _CoreSymbols | None:
    return CORE_SYMBOLS if value == "core" else value


def _live_kernel_hint(error: KvmError) -> str | None:
    """Why the running kernel cannot be opened, in terms a user can act on."""
    if not os.path.exists(paths._PATH_MEM):
        return (
            f"{paths._PATH_MEM} does not exist: the kernel lacks CONFIG_PROC_KCORE, "
            "or /proc is not mounted; give a dump with -M"
        )
    if error.errno in (1, 13) and os.geteuid() != 0:
        return f"reading {paths._PATH_MEM} needs root (CAP_SYS_RAWIO): run as root, or give -M DUMP"
    return None


def _fail(error: KvmError, corefile: str | list[str] | None) -> int:
    print(f"kvm-rs: {error.message}", file=sys.stderr)
    hint = _live_kernel_hint(error) if corefile is None else None
    if hint:
        print(f"kvm-rs: {hint}", file=sys.stderr)
    return EXIT_FAILED


def _emit(obj: dict[str, Any], out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(obj) + "\n")


def _corefile(args: argparse.Namespace) -> str | list[str] | None:
    """-M once: that file; more than once: the parts of a split dump."""
    given: list[str] | None = args.corefile
    if not given:
        return None
    return given[0] if len(given) == 1 else given


def _vmcoreinfo(args: argparse.Namespace) -> bytes | None:
    """The --vmcoreinfo file's text; a file that cannot be read is a usage error."""
    if args.vmcoreinfo is None:
        return None
    try:
        with open(args.vmcoreinfo, "rb") as file:
            return file.read()
    except OSError as error:
        print(f"kvm-rs: --vmcoreinfo {args.vmcoreinfo}: {error.strerror}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _info(kd: Kvm, args: argparse.Namespace) -> int:
    shown = " ".join(args.corefile) if args.corefile else paths._PATH_MEM
    info = kd.info.as_dict()
    if args.json:
        _emit({"corefile": shown, **info})
        return EXIT_OK
    vmcoreinfo = info.pop("vmcoreinfo")
    print(f"{'corefile':<15} {shown}")
    for key, value in info.items():
        text = f"{value:#x}" if key == "kernel_offset" else value
        print(f"{key:<15} {'-' if text is None else text}")
    print(f"{'vmcoreinfo':<15} {len(vmcoreinfo)} keys")
    return EXIT_OK


def _nlist(kd: Kvm, args: argparse.Namespace) -> int:
    found = kd.nlist(args.names)
    for name in args.names:
        value = found.get(name)
        if args.json:
            _emit({"name": name, "value": value})
        else:
            print(f"{'-' if value is None else f'{value:#018x}'} {name}")
    return EXIT_OK if len(found) == len(args.names) else EXIT_FAILED


def _parse_int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def _hexdump(addr: int, data: bytes) -> Iterator[str]:
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        hex_part = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        yield f"{addr + at:016x}  {hex_part:<47}  |{text}|"


def _read(kd: Kvm, args: argparse.Namespace) -> int:
    addr = _parse_int(args.address)
    if addr is None:
        addr = kd.nlist([args.address]).get(args.address)
        if addr is None:
            print(f"kvm-rs: {args.address}: no such symbol", file=sys.stderr)
            return EXIT_FAILED
    size = _parse_int(args.size)
    if size is None or size < 0:
        print(f"kvm-rs: {args.size}: not a size", file=sys.stderr)
        return EXIT_USAGE
    data = kd.read(addr, size)
    if args.raw:
        sys.stdout.buffer.write(data)
    elif args.json:
        _emit({"address": addr, "size": len(data), "hex": data.hex()})
    else:
        for line in _hexdump(addr, data):
            print(line)
    return EXIT_OK


def _dmesg(kd: Kvm, args: argparse.Namespace) -> int:
    for line in kd.dmesg():
        if args.json:
            _emit({"line": line})
        else:
            print(line)
    return EXIT_OK


#: How much of a file tells text from a dump.
_SNIFF_BYTES = 512


def _is_text(path: str) -> bool:
    """Is this file text (a console log, a kexec command line, dmesg output)? Crash folders
    of kdump-tools and kdump-utils hold those beside the dump; they are not failed dumps.
    An empty file is not text: an empty vmcore is a dump that failed, and is reported."""
    try:
        with open(path, "rb") as file:
            head = file.read(_SNIFF_BYTES)
    except OSError:
        return False  # reported, with the reason it cannot be read
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the end of the sniffed bytes is still text.
        return error.start >= len(head) - 3
    return True


def _collect(targets: Sequence[str]) -> list[str]:
    """Files named, and the files inside folders named (recursively, sorted) but text."""
    found: list[str] = []
    for target in targets:
        if os.path.isdir(target):
            for root, dirs, files in os.walk(target):
                dirs.sort()
                found.extend(
                    path
                    for path in (os.path.join(root, name) for name in sorted(files))
                    if not _is_text(path)
                )
        else:
            found.append(target)
    return found


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\rscanning [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stderr.flush()


def _describe(report: ScanReport) -> str:
    """One line for a dump that opened: what it is, and what is wrong with it."""
    notes = []
    if len(report.parts) > 1:
        notes.append(f"split dump of {len(report.parts)} parts")
    elif report.pfn_range is not None:
        start, end = report.pfn_range
        notes.append(f"split part (pfn {start:#x}-{end:#x})")
    if report.truncated:
        notes.append("truncated")
    if report.incomplete:
        notes.append("incomplete")
    if not report.readable:
        notes.append(f"unreadable: {report.reason}")
    flags = f" [{'; '.join(notes)}]" if notes else ""
    names = " + ".join(report.parts) if report.parts else report.path
    return (
        f"{names}: {report.format} {report.compression or '-'} {report.machine or '-'} "
        f"{report.osrelease or '-'}{flags} panic: {report.panic or '-'}"
    )


def _scan(args: argparse.Namespace) -> int:
    files = _collect(args.paths or [DEFAULT_SCAN_DIR])
    show_progress = sys.stderr.isatty() and not args.json
    # Batches of a few files keep the bar moving; each batch runs all threads.
    batch = max(1, (args.threads or os.cpu_count() or 1) * 4) if show_progress else len(files)
    reports: list[ScanReport] = []
    execfile = args.execfile if args.execfile != "core" else None
    vmcoreinfo = _vmcoreinfo(args)
    if show_progress:
        batches = [files[start : start + batch] for start in range(0, len(files), max(batch, 1))]
    else:
        batches = [files]
    for chunk in batches:
        reports.extend(scan(chunk, execfile=execfile, threads=args.threads, vmcoreinfo=vmcoreinfo))
        if show_progress:
            _progress(len(reports), len(files))
    if show_progress:
        sys.stderr.write("\n")
    for report in reports:
        if args.json:
            _emit(report.as_dict())
        elif report.ok:
            print(f"ok    {_describe(report)}")
        else:
            print(f"FAIL  {report.error}")
    failed = sum(not r.ok for r in reports)
    if not args.json:
        print(f"{len(reports) - failed} ok, {failed} failed", file=sys.stderr)
    return EXIT_SOME_DUMPS_FAILED if failed else EXIT_OK


COMMANDS = {"info": _info, "nlist": _nlist, "read": _read, "dmesg": _dmesg}


#: The shell's status for a command ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        # Ctrl-C stops the native work within a tenth of a second; no traceback for it.
        print("kvm-rs: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    if args.command == "scan":
        return _scan(args)
    try:
        with Kvm(
            execfile=_execfile(args.execfile),
            corefile=_corefile(args),
            vmcoreinfo=_vmcoreinfo(args),
        ) as kd:
            return COMMANDS[args.command](kd, args)
    except KvmError as error:
        return _fail(error, _corefile(args))
    except BrokenPipeError:
        # `kvm-rs dmesg | head`: the reader left; that is not an error of ours.
        sys.stderr.close()
        return EXIT_OK
