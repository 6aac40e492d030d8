"""The real-dump corpus (../shared/corpus): every dump, with System.map and with the stripped
vmlinux, against truth.json (drgn, crash and libkdumpfile agreeing).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import kvm_rs
import pytest

if TYPE_CHECKING:
    from conftest import Corpus

EXEC_KINDS = ["system.map", "vmlinux"]

FORMATS = {"elf": "elf", "kdump-compressed": "kdump", "makedumpfile-flattened": "flattened"}

LETTER_TYPES = {
    "T": kvm_rs.N_TEXT,
    "D": kvm_rs.N_DATA,
    "R": kvm_rs.N_DATA,
    "B": kvm_rs.N_BSS,
    "A": kvm_rs.N_ABS,
}


def expected_compression(name: str, truth: dict) -> str | None:
    if truth["format"] == "elf":
        return None
    for codec in ("zlib", "lzo", "zstd", "snappy"):
        if f"-{codec}." in name:
            return codec
    raise AssertionError(f"no compression in the name {name}")


def n_type_of(letter: str) -> int:
    base = LETTER_TYPES[letter.upper()]
    return base | kvm_rs.N_EXT if letter.isupper() else base


def parse_vmcoreinfo(path: Path) -> dict[str, str]:
    entries = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            entries[key] = value
    return entries


@pytest.fixture(params=EXEC_KINDS)
def exec_kind(request) -> str:
    return request.param


def test_info(corpus: Corpus, dump_name: str, exec_kind: str) -> None:
    truth = corpus.dump_truth(dump_name)
    with kvm_rs.Kvm(corpus.exec_path(exec_kind), corpus.dump(dump_name)) as kd:
        info = kd.info
    assert info.osrelease == truth["vmcoreinfo_OSRELEASE"]
    assert info.kernel_offset == int(truth["KERNELOFFSET"], 16)
    assert info.format == FORMATS[truth["format"]]
    assert info.compression == expected_compression(dump_name, truth)
    assert info.machine == "x86_64"
    assert info.build_id == corpus.build_id
    assert info.page_size == 4096
    assert info.pgtable_levels == 4
    assert info.truncated is False
    assert info.live is False
    assert info.exec_format == {"system.map": "system.map", "vmlinux": "elf"}[exec_kind]
    assert info.vmcoreinfo == parse_vmcoreinfo(corpus.vmcoreinfo_file(dump_name))


def test_flattened_qemu_dump_is_zlib(corpus: Corpus) -> None:
    flattened = corpus.dumps_of_format("makedumpfile-flattened")
    assert flattened == ["boot-nokaslr.qemu-kdump-zlib.vmcore"]
    with kvm_rs.Kvm(corpus.system_map, corpus.dump(flattened[0])) as kd:
        assert (kd.info.format, kd.info.compression) == ("flattened", "zlib")


def test_nlist_truth_symbols(corpus: Corpus, dump_name: str, exec_kind: str) -> None:
    symbols = corpus.dump_truth(dump_name)["symbols"]
    assert len(symbols) == 29
    kd = kvm_rs.openfiles(corpus.exec_path(exec_kind), corpus.dump(dump_name))
    assert kd is not None, "the open failed"
    found = kd.nlist(list(symbols))
    assert found == {name: int(s["runtime_address"], 16) for name, s in symbols.items()}

    nl = [kvm_rs.Nlist(name, n_type=0xFF, n_value=0xDEAD) for name in symbols]
    assert kvm_rs.nlist(kd, nl) == 0
    for entry in nl:
        truth = symbols[entry.n_name]
        assert entry.n_value == int(truth["runtime_address"], 16), entry.n_name
        assert entry.n_type == n_type_of(truth["nm_type"]), entry.n_name
    assert kvm_rs.geterr(kd) == ""
    assert kvm_rs.close(kd) == 0


def test_nlist_c_style_rules(corpus: Corpus, dump_name: str, exec_kind: str) -> None:
    symbols = corpus.dump_truth(dump_name)["symbols"]
    runtime = {name: int(s["runtime_address"], 16) for name, s in symbols.items()}
    offset = int(corpus.dump_truth(dump_name)["KERNELOFFSET"], 16)
    kd = kvm_rs.openfiles(corpus.exec_path(exec_kind), corpus.dump(dump_name))
    assert kd is not None
    nl = [
        kvm_rs.Nlist("_stext"),
        kvm_rs.Nlist("jiffies"),
        kvm_rs.Nlist("vmcoreinfo_data"),
        kvm_rs.Nlist("__log_buf"),
        kvm_rs.Nlist("_jiffies", n_type=0x33, n_value=0x33),
        kvm_rs.Nlist("kexec_control_code_size"),
        kvm_rs.Nlist("fixed_percpu_data", n_type=0x33, n_value=0x33),
        kvm_rs.Nlist("no_such_symbol_1", n_type=0x33, n_value=0x33),
        kvm_rs.Nlist("__jiffies"),
        kvm_rs.Nlist(b"no_such_symbol_2"),
        kvm_rs.Nlist(""),
        kvm_rs.Nlist("init_task", n_type=0x44, n_value=0x44),
    ]
    assert kvm_rs.nlist(kd, nl) == 3
    got = [(e.n_type, e.n_value) for e in nl]
    assert got[0] == (kvm_rs.N_TEXT | kvm_rs.N_EXT, runtime["_stext"])
    assert got[1] == (kvm_rs.N_DATA | kvm_rs.N_EXT, runtime["jiffies"])
    assert got[2] == (kvm_rs.N_BSS | kvm_rs.N_EXT, runtime["vmcoreinfo_data"])
    assert got[3] == (kvm_rs.N_BSS, runtime["__log_buf"])
    assert got[4] == (kvm_rs.N_DATA | kvm_rs.N_EXT, runtime["jiffies"])
    # Outside the kernel image: absolute and per-cpu symbols are not relocated.
    assert got[5] == (kvm_rs.N_ABS | kvm_rs.N_EXT, 0x1EA)
    assert got[6] == (kvm_rs.N_DATA | kvm_rs.N_EXT, 0)
    assert got[7] == (0, 0)
    assert got[8] == (0, 0)
    assert got[9] == (0, 0)
    assert got[11] == (0x44, 0x44)
    assert runtime["_stext"] == 0xFFFF_FFFF_8100_0000 + offset
    assert kvm_rs.close(kd) == 0


UNDERSCORE_CASES = {
    "_jiffies": ("_jiffies", "jiffies"),
    "_init_task": ("_init_task", "init_task"),
    "__per_cpu_offset": ("__per_cpu_offset", "__per_cpu_offset"),
    "_text": ("_text", "_text"),
}


@pytest.mark.parametrize("case", UNDERSCORE_CASES.values(), ids=UNDERSCORE_CASES.keys())
def test_kvm_nlist_leading_underscore(
    corpus: Corpus, dump_name: str, case: tuple[str, str]
) -> None:
    """A name matches itself, or else the name without one leading underscore."""
    asked, symbol = case
    runtime = int(corpus.dump_truth(dump_name)["symbols"][symbol]["runtime_address"], 16)
    with kvm_rs.Kvm(corpus.system_map, corpus.dump(dump_name)) as kd:
        assert kd.nlist([asked, "no_such_symbol"]) == {asked: runtime}


def test_kallsyms_of_another_kernel_is_a_mismatch(corpus: Corpus, dump_name: str) -> None:
    kallsyms = str(corpus.kallsyms)
    dump = str(corpus.dump(dump_name))
    with pytest.raises(kvm_rs.KvmError) as raised:
        kvm_rs.Kvm(kallsyms, dump)
    message = str(raised.value)
    prefix = f"{kallsyms}: does not match {dump} ("
    assert message.startswith(prefix)
    errbuf = bytearray(2048)
    assert kvm_rs.openfiles(kallsyms, dump, errbuf=errbuf) is None
    assert bytes(errbuf[: errbuf.index(0)]) == message.encode()
    if corpus.dump_truth(dump_name)["kaslr"]:
        assert message == (
            f"{kallsyms}: does not match {dump} "
            "(SYMBOL(_stext): 0xffffffff81000000 != 0xffffffffa8400000)"
        )
    else:
        # _stext agrees (both unrandomized) and the host's kallsyms is text-only: the dump's
        # own kallsyms tables are what tells the kernels apart (SPEC §6).
        assert re.fullmatch(re.escape(prefix) + r"kallsyms: .+ != .+\)", message), message


def test_kaslr_pairing_message(corpus: Corpus) -> None:
    kaslr = [n for n in corpus.dumps if corpus.dump_truth(n)["kaslr"]]
    assert kaslr == ["boot-kaslr.mdf-d31-snappy.kdump"]
    kallsyms, dump = str(corpus.kallsyms), str(corpus.dump(kaslr[0]))
    errbuf = bytearray(2048)
    assert kvm_rs.openfiles(kallsyms, dump, errbuf=errbuf) is None
    assert bytes(errbuf[: errbuf.index(0)]).decode() == (
        f"{kallsyms}: does not match {dump} "
        "(SYMBOL(_stext): 0xffffffff81000000 != 0xffffffffa8400000)"
    )


def test_open_close_five_times(corpus: Corpus, dump_name: str, exec_kind: str) -> None:
    for _ in range(5):
        kd = kvm_rs.openfiles(corpus.exec_path(exec_kind), corpus.dump(dump_name))
        assert kd is not None
        assert kvm_rs.geterr(kd) == ""
        assert kvm_rs.close(kd) == 0
        assert kvm_rs.close(kd) == -1


def test_truth_symbols_agree_with_system_map(corpus: Corpus) -> None:
    """A guard on the fixture itself: truth's link-time addresses and types are System.map's."""
    table: dict[str, tuple[int, str]] = {}
    for line in corpus.system_map.read_text().splitlines():
        value, letter, name = line.split()[:3]
        table.setdefault(name, (int(value, 16), letter))
    for dump_name in corpus.dumps:
        for name, entry in corpus.dump_truth(dump_name)["symbols"].items():
            assert table[name] == (int(entry["nm_address"], 16), entry["nm_type"]), name
