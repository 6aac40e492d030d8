"""kvm-rs: the command line. `kvm-rs info [-N execfile] [-M corefile] [--json]`.

With no -M it opens the running kernel (/proc/kcore), as kvm_open(NULL, NULL, ...) does.
Exit status: 0 success, 1 the open failed (the message says why), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import paths
from ._handle import Kvm
from .errors import KvmError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvm-rs",
        description="Open Linux kernel crash dumps and the live kernel the BSD libkvm way.",
        epilog="exit status: 0 ok, 1 the open failed (message on stderr), 2 usage error",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser(
        "info",
        help="what a dump (or the running kernel) is: format, release, build-id, KASLR offset",
        description="Print what kvm_rs knows of a core file without reading kernel memory.",
    )
    info.add_argument(
        "-N",
        dest="execfile",
        metavar="EXECFILE",
        help="symbol table: vmlinux, System.map or kallsyms (default: /proc/kallsyms, "
        "else the running kernel's vmlinux or System.map)",
    )
    info.add_argument(
        "-M",
        dest="corefile",
        metavar="COREFILE",
        help="core file: a crash dump, or /proc/kcore (default: the running kernel)",
    )
    info.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return parser


def _live_kernel_hint(error: KvmError) -> str | None:
    """Why the running kernel cannot be opened, in terms a user can act on."""
    if not os.path.exists(paths._PATH_MEM):
        return (
            f"{paths._PATH_MEM} does not exist: the kernel lacks CONFIG_PROC_KCORE, "
            "or /proc is not mounted"
        )
    if error.errno in (1, 13) and os.geteuid() != 0:
        return f"reading {paths._PATH_MEM} needs root (CAP_SYS_RAWIO): run as root, or give -M DUMP"
    return None


def _format_text(path: str, info: dict[str, Any]) -> str:
    vmcoreinfo = info.pop("vmcoreinfo")
    lines = [f"{'corefile':<15} {path}"]
    for key, value in info.items():
        if key == "kernel_offset":
            value = f"{value:#x}"
        lines.append(f"{key:<15} {'-' if value is None else value}")
    lines.append(f"{'vmcoreinfo':<15} {len(vmcoreinfo)} keys")
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> int:
    corefile = args.corefile
    try:
        with Kvm(execfile=args.execfile, corefile=corefile) as kd:
            info = kd.info.as_dict()
    except KvmError as error:
        print(f"kvm-rs: {error.message}", file=sys.stderr)
        if corefile is None:
            hint = _live_kernel_hint(error)
            if hint:
                print(f"kvm-rs: {hint}", file=sys.stderr)
        return EXIT_FAILED
    shown = corefile if corefile is not None else paths._PATH_MEM
    if args.json:
        print(json.dumps({"corefile": shown, **info}, sort_keys=False))
    else:
        print(_format_text(shown, info))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        return _info(args)
    return EXIT_USAGE
