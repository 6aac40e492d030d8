"""Shared fixtures: the real-dump corpus (../shared/corpus), synthetic files, fd counting.

The corpus lives beside the repository (`Path(__file__).resolve().parents[2] / "shared"`,
else `$KVM_RS_SHARED`). Its compressed files are unpacked once per session by the corpus's
own `unpack.py` (into `$KVM_RS_CORPUS_DIR`, else ~/.cache/kvm-rs-corpus). Without the corpus,
the tests that need it skip, saying so; with it, they never skip: a failed unpack fails them.
The fleet (../shared/fleet: other kernels, arm64, a split dump) works the same way, with its
own `unpack.py` (into `$KVM_RS_FLEET_DIR`, else ~/.cache/kvm-rs-fleet).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import elfwriter
import synthetic
from synthetic import synthetic_vmcoreinfo

SYSTEM_MAP = "System.map-6.1.0-56-amd64"
VMLINUX = "vmlinux-6.1.0-56-amd64.stripped"
KALLSYMS = "kallsyms-host.txt"


def shared_dir() -> Path | None:
    """../shared beside the repository root, else $KVM_RS_SHARED; None if neither exists."""
    beside = Path(__file__).resolve().parents[2] / "shared"
    if (beside / "corpus").is_dir():
        return beside
    env = os.environ.get("KVM_RS_SHARED")
    if env and (Path(env) / "corpus").is_dir():
        return Path(env)
    return None


def _shared_truth() -> dict[str, Any] | None:
    shared = shared_dir()
    if shared is None:
        return None
    return json.loads((shared / "corpus" / "truth.json").read_text())


_TRUTH = _shared_truth()
CORPUS_ABSENT = (
    "corpus absent: no ../shared/corpus beside the repository and no $KVM_RS_SHARED/corpus"
)
#: Dump names (truth.json's "dumps" keys), known at collection time for readable test ids.
DUMP_NAMES: list[str] = sorted(_TRUTH["dumps"]) if _TRUTH else []


def fleet_source() -> Path | None:
    """../shared/fleet beside the repository, else $KVM_RS_SHARED/fleet; None if neither."""
    beside = Path(__file__).resolve().parents[2] / "shared" / "fleet"
    if beside.is_dir():
        return beside
    env = os.environ.get("KVM_RS_SHARED")
    if env and (Path(env) / "fleet").is_dir():
        return Path(env) / "fleet"
    return None


def _fleet_truth() -> dict[str, Any] | None:
    source = fleet_source()
    if source is None:
        return None
    return json.loads((source / "truth.json").read_text())


_FLEET_TRUTH = _fleet_truth()
FLEET_ABSENT = "fleet absent: no ../shared/fleet beside the repository and no $KVM_RS_SHARED/fleet"
#: The fleet's dump names (truth.json's "dumps" keys: each part of a split dump is one).
FLEET_DUMP_NAMES: list[str] = sorted(_FLEET_TRUTH["dumps"]) if _FLEET_TRUTH else []
#: The files of every split set (truth.json's "sets"), each a part of one dump.
FLEET_SPLIT_PARTS: list[str] = (
    sorted(part for s in _FLEET_TRUTH["sets"].values() for part in s["parts"])
    if _FLEET_TRUTH
    else []
)
#: Parametrized test arguments: every fleet dump; every dump but the split parts; the parts.
FLEET_PARAMS: dict[str, list[str]] = {
    "fleet_dump": FLEET_DUMP_NAMES,
    "fleet_whole_dump": [n for n in FLEET_DUMP_NAMES if n not in FLEET_SPLIT_PARTS],
    "fleet_split_part": FLEET_SPLIT_PARTS,
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking `dump_name` run once per corpus dump (or skip once, corpus absent); those
    taking one of FLEET_PARAMS once per fleet dump of that kind (or skip once, fleet absent)."""
    if "dump_name" in metafunc.fixturenames:
        if DUMP_NAMES:
            metafunc.parametrize("dump_name", DUMP_NAMES)
        else:
            metafunc.parametrize(
                "dump_name", [pytest.param(None, marks=pytest.mark.skip(reason=CORPUS_ABSENT))]
            )
    for param, names in FLEET_PARAMS.items():
        if param in metafunc.fixturenames:
            if _FLEET_TRUTH is not None:
                metafunc.parametrize(param, names)
            else:
                metafunc.parametrize(
                    param, [pytest.param(None, marks=pytest.mark.skip(reason=FLEET_ABSENT))]
                )


@dataclass(frozen=True)
class Corpus:
    """The unpacked corpus: `dir` holds every file uncompressed; `truth` is truth.json."""

    dir: Path
    truth: dict[str, Any]

    @property
    def dumps(self) -> list[str]:
        return sorted(self.truth["dumps"])

    def path(self, name: str) -> Path:
        return self.dir / name

    def dump(self, name: str) -> Path:
        return self.dir / self.truth["dumps"][name]["file"]

    def dump_truth(self, name: str) -> dict[str, Any]:
        return self.truth["dumps"][name]

    def vmcoreinfo_file(self, name: str) -> Path:
        return self.dir / self.truth["dumps"][name]["vmcoreinfo_file"]

    @property
    def system_map(self) -> Path:
        return self.dir / SYSTEM_MAP

    @property
    def vmlinux(self) -> Path:
        return self.dir / VMLINUX

    @property
    def kallsyms(self) -> Path:
        return self.dir / KALLSYMS

    def exec_path(self, kind: str) -> Path:
        return {"system.map": self.system_map, "vmlinux": self.vmlinux}[kind]

    @property
    def build_id(self) -> str:
        # "eb4f... (== VMCOREINFO BUILD-ID in every dump)": the hex is the first word.
        return self.truth["vmlinux"]["gnu_build_id"].split()[0]

    def dumps_of_format(self, fmt: str) -> list[str]:
        return [n for n in self.dumps if self.truth["dumps"][n]["format"] == fmt]


@pytest.fixture(autouse=True)
def fresh_build_cache() -> None:
    """Each test decodes its dumps' kallsyms names and BTF itself: a build cached by an
    earlier test would hide what this one reads."""
    import kvm_rs

    kvm_rs.clear_build_cache()


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    """The corpus, unpacked. Skips only when ../shared/corpus is absent."""
    shared = shared_dir()
    if shared is None:
        pytest.skip(CORPUS_ABSENT)
    unpack = shared / "corpus" / "unpack.py"
    run = subprocess.run(
        [sys.executable, str(unpack)], capture_output=True, text=True, env=os.environ.copy()
    )
    if run.returncode != 0:
        pytest.fail(f"{unpack} failed ({run.returncode}): {run.stderr.strip()}", pytrace=False)
    folder = Path(run.stdout.strip().splitlines()[-1])
    truth = json.loads((folder / "truth.json").read_text())
    for needed in (SYSTEM_MAP, VMLINUX, KALLSYMS, *(d["file"] for d in truth["dumps"].values())):
        if not (folder / needed).is_file():
            pytest.fail(f"corpus file missing after unpack: {folder / needed}", pytrace=False)
    return Corpus(folder, truth)


@dataclass(frozen=True)
class Fleet:
    """The unpacked fleet: `dir` holds every file uncompressed; `truth` is its truth.json."""

    dir: Path
    truth: dict[str, Any]

    @property
    def dumps(self) -> list[str]:
        return sorted(self.truth["dumps"])

    def dump(self, name: str) -> Path:
        return self.dir / name

    def dump_truth(self, name: str) -> dict[str, Any]:
        return self.truth["dumps"][name]

    def boot(self, name: str) -> dict[str, Any]:
        """truth.json's `boots` entry of the boot the dump was taken from."""
        return self.truth["boots"][self.dump_truth(name)["boot"]]

    def exec_file(self, name: str) -> Path:
        """The dump's System.map (truth.json's exec_files)."""
        return self.dir / self.dump_truth(name)["exec_files"][0]

    def console_log(self, name: str) -> Path:
        return self.dir / self.boot(name)["console_log"]

    def vmcoreinfo_file(self, name: str) -> Path:
        return self.dir / self.boot(name)["vmcoreinfo_file"]

    def machine(self, name: str) -> str:
        """uname -m of the guest ("x86_64, QEMU 7.2 ..." in truth.json's boots)."""
        return str(self.boot(name)["machine"].split(",")[0])

    @property
    def split_sets(self) -> dict[str, dict[str, Any]]:
        return self.truth["sets"]

    def split_set_of(self, part: str) -> str:
        [name] = [n for n, s in self.split_sets.items() if part in s["parts"]]
        return name

    def is_split_part(self, name: str) -> bool:
        return any(name in s["parts"] for s in self.split_sets.values())


@pytest.fixture(scope="session")
def fleet() -> Fleet:
    """The fleet, unpacked. Skips only when ../shared/fleet is absent; a failed unpack or a
    file missing after it fails every test that needs the fleet."""
    source = fleet_source()
    if source is None:
        pytest.skip(FLEET_ABSENT)
    unpack = source / "unpack.py"
    run = subprocess.run(
        [sys.executable, str(unpack)], capture_output=True, text=True, env=os.environ.copy()
    )
    if run.returncode != 0 or not run.stdout.strip():
        pytest.fail(f"{unpack} failed ({run.returncode}): {run.stderr.strip()}", pytrace=False)
    folder = Path(run.stdout.strip().splitlines()[-1])
    truth = json.loads((folder / "truth.json").read_text())
    needed = {"truth.json", *truth["dumps"]}
    for entry in truth["dumps"].values():
        needed.update(entry["exec_files"])
    for boot in truth["boots"].values():
        needed.update((boot["console_log"], boot["vmcoreinfo_file"]))
    for name in sorted(needed):
        if not (folder / name).is_file():
            pytest.fail(f"fleet file missing after unpack: {folder / name}", pytrace=False)
    return Fleet(folder, truth)


@pytest.fixture
def fd_count() -> Callable[[], int]:
    """Counts this process's open file descriptors."""
    return lambda: len(os.listdir("/proc/self/fd"))


# -- synthetic files -------------------------------------------------------------------------


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[[str, bytes], Path]:
    """Writes `data` to tmp_path/name and returns the path."""

    def make(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return make


@pytest.fixture
def synthetic_core(make_file: Callable[[str, bytes], Path]) -> Path:
    """A small x86_64 ELF64 core of the synthetic kernel (one PT_LOAD of 4 KiB)."""
    return make_file(
        "synthetic.core",
        elfwriter.elf_core(
            synthetic_vmcoreinfo(),
            [elfwriter.Load(0xFFFF_8880_0000_0000, 0, b"\xaa" * 4096)],
        ),
    )


@pytest.fixture
def synthetic_map(make_file: Callable[[str, bytes], Path]) -> Path:
    """The synthetic kernel's System.map."""
    return make_file("System.map-test", elfwriter.system_map(synthetic.SYMBOLS))


def text_file(path: Path) -> Path:
    """FreeBSD's ATF "some-file": plain text, neither a core nor a symbol table."""
    path.write_text("this is a text file")
    return path


@pytest.fixture
def some_file(tmp_path: Path) -> Path:
    return text_file(tmp_path / "some-file")
