"""Small synthetic ELF files for the tests, written with `struct` only (after drgn's
tests/elfwriter.py).

Two kinds:

- cores (`elf_core`): ET_CORE with one PT_NOTE (a `VMCOREINFO` note, plus any extra notes)
  and PT_LOAD segments, ELF32 or ELF64, either byte order;
- kernel images (`elf_exec`): ET_EXEC with `.text`, `.rodata`, `.data`, `.bss`, an optional
  `.note.gnu.build-id`, and `.symtab`/`.strtab`/`.shstrtab` (or, stripped, no `.symtab`).

A test that needs a broken file builds a good one and patches the bytes it wants wrong
(`patch_ehdr` names the ELF header fields), so that only the damage under test differs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

ET_EXEC = 2
ET_DYN = 3
ET_CORE = 4

EM_386 = 3
EM_PPC = 20
EM_PPC64 = 21
EM_S390 = 22
EM_X86_64 = 62
EM_AARCH64 = 183

PT_LOAD = 1
PT_NOTE = 4

SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_NOTE = 7
SHT_NOBITS = 8

SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4

SHN_UNDEF = 0
SHN_ABS = 0xFFF1

STB_LOCAL = 0
STB_GLOBAL = 1
STB_WEAK = 2

STT_NOTYPE = 0
STT_OBJECT = 1
STT_FUNC = 2
STT_SECTION = 3

NT_GNU_BUILD_ID = 3

#: Where the synthetic kernel image lives (x86_64's __START_KERNEL_map + 16 MiB).
TEXT_ADDR = 0xFFFF_FFFF_8100_0000


def _layout(bits: int) -> dict[str, int]:
    if bits == 64:
        return {"ehsize": 64, "phentsize": 56, "shentsize": 64, "symsize": 24}
    if bits == 32:
        return {"ehsize": 52, "phentsize": 32, "shentsize": 40, "symsize": 16}
    raise ValueError(f"bits must be 32 or 64, not {bits}")


def _endian(little_endian: bool) -> str:
    return "<" if little_endian else ">"


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def ehdr(
    *,
    bits: int,
    little_endian: bool,
    e_type: int,
    e_machine: int,
    phoff: int = 0,
    phnum: int = 0,
    shoff: int = 0,
    shnum: int = 0,
    shstrndx: int = 0,
    ei_class: int | None = None,
    ei_data: int | None = None,
) -> bytes:
    """An ELF header. `ei_class`/`ei_data` override the identification bytes (to damage them)."""
    sizes = _layout(bits)
    ident = bytearray(b"\x7fELF" + bytes(12))
    ident[4] = ei_class if ei_class is not None else (2 if bits == 64 else 1)
    ident[5] = ei_data if ei_data is not None else (1 if little_endian else 2)
    ident[6] = 1  # EV_CURRENT
    word = "Q" if bits == 64 else "I"
    fmt = f"{_endian(little_endian)}16sHHI{word}{word}{word}IHHHHHH"
    return struct.pack(
        fmt,
        bytes(ident),
        e_type,
        e_machine,
        1,
        0,
        phoff,
        shoff,
        0,
        sizes["ehsize"],
        sizes["phentsize"],
        phnum,
        sizes["shentsize"] if shnum else 0,
        shnum,
        shstrndx,
    )


def phdr(
    *,
    bits: int,
    little_endian: bool,
    p_type: int,
    offset: int,
    vaddr: int,
    paddr: int,
    filesz: int,
    memsz: int,
    flags: int = 0,
    align: int = 0,
) -> bytes:
    e = _endian(little_endian)
    if bits == 64:
        return struct.pack(
            f"{e}IIQQQQQQ", p_type, flags, offset, vaddr, paddr, filesz, memsz, align
        )
    return struct.pack(f"{e}IIIIIIII", p_type, offset, vaddr, paddr, filesz, memsz, flags, align)


def note(name: bytes, n_type: int, desc: bytes, *, little_endian: bool = True) -> bytes:
    """One ELF note: header, NUL-terminated name and descriptor, each padded to 4 bytes."""
    name_z = name + b"\0"
    head = struct.pack(f"{_endian(little_endian)}III", len(name_z), len(desc), n_type)
    return (
        head + name_z.ljust(_align(len(name_z), 4), b"\0") + desc.ljust(_align(len(desc), 4), b"\0")
    )


def vmcoreinfo_text(entries: dict[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """`KEY=value` lines, as the kernel writes them."""
    items = entries.items() if isinstance(entries, dict) else entries
    return "".join(f"{key}={value}\n" for key, value in items).encode()


@dataclass
class Load:
    """One PT_LOAD: `data` is what the file holds (p_filesz); `memsz` defaults to it."""

    vaddr: int
    paddr: int
    data: bytes
    memsz: int | None = None


@dataclass
class CoreLayout:
    """Where `elf_core` put things, for tests that cut or patch the file."""

    phoff: int
    phnum: int
    notes_offset: int
    notes_size: int
    data_offset: int
    size: int
    load_offsets: list[int] = field(default_factory=list)


def elf_core_with_layout(
    vmcoreinfo: bytes | None = None,
    loads: Sequence[Load] = (),
    *,
    bits: int = 64,
    little_endian: bool = True,
    e_machine: int = EM_X86_64,
    e_type: int = ET_CORE,
    extra_notes: Sequence[tuple[bytes, int, bytes]] = (),
    ei_class: int | None = None,
    ei_data: int | None = None,
) -> tuple[bytes, CoreLayout]:
    """An ELF core: header, program headers (PT_NOTE first), the notes, then load data."""
    sizes = _layout(bits)
    notes = b""
    if vmcoreinfo is not None:
        notes += note(b"VMCOREINFO", 0, vmcoreinfo, little_endian=little_endian)
    for name, n_type, desc in extra_notes:
        notes += note(name, n_type, desc, little_endian=little_endian)
    phnum = 1 + len(loads)
    phoff = sizes["ehsize"]
    notes_offset = phoff + phnum * sizes["phentsize"]
    data_offset = _align(notes_offset + len(notes), 16)
    headers = [
        phdr(
            bits=bits,
            little_endian=little_endian,
            p_type=PT_NOTE,
            offset=notes_offset,
            vaddr=0,
            paddr=0,
            filesz=len(notes),
            memsz=len(notes),
        )
    ]
    body = b""
    offsets = []
    for load in loads:
        offset = data_offset + len(body)
        offsets.append(offset)
        headers.append(
            phdr(
                bits=bits,
                little_endian=little_endian,
                p_type=PT_LOAD,
                offset=offset,
                vaddr=load.vaddr,
                paddr=load.paddr,
                filesz=len(load.data),
                memsz=load.memsz if load.memsz is not None else len(load.data),
                flags=0x7,
                align=0x1000,
            )
        )
        body += load.data
    header = ehdr(
        bits=bits,
        little_endian=little_endian,
        e_type=e_type,
        e_machine=e_machine,
        phoff=phoff,
        phnum=phnum,
        ei_class=ei_class,
        ei_data=ei_data,
    )
    image = header + b"".join(headers) + notes
    image = image.ljust(data_offset, b"\0") + body
    layout = CoreLayout(
        phoff=phoff,
        phnum=phnum,
        notes_offset=notes_offset,
        notes_size=len(notes),
        data_offset=data_offset,
        size=len(image),
        load_offsets=offsets,
    )
    return image, layout


def elf_core(vmcoreinfo: bytes | None = None, loads: Sequence[Load] = (), **kwargs) -> bytes:
    """An ELF core (see `elf_core_with_layout`)."""
    return elf_core_with_layout(vmcoreinfo, loads, **kwargs)[0]


@dataclass
class Symbol:
    """A symbol of `elf_exec`: `section` is a section name, "ABS" or "UNDEF"."""

    name: str
    value: int
    section: str = ".text"
    binding: int = STB_GLOBAL
    type: int = STT_NOTYPE
    size: int = 0


@dataclass
class Section:
    name: str
    sh_type: int
    flags: int
    addr: int
    data: bytes = b""
    size: int | None = None  # SHT_NOBITS: the memory size
    link: int = 0
    info: int = 0
    align: int = 1
    entsize: int = 0


def kernel_sections(
    *,
    text_addr: int = TEXT_ADDR,
    rodata: bytes = b"",
    build_id: bytes | None = None,
    little_endian: bool = True,
) -> list[Section]:
    """The allocated sections of a tiny kernel image: .text, .rodata, .data, .bss (1 MiB
    apart) and, with `build_id`, a `.note.gnu.build-id`."""
    sections = [
        Section(
            ".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, text_addr, b"\xc3" * 64, align=16
        ),
        Section(".rodata", SHT_PROGBITS, SHF_ALLOC, text_addr + 0x10_0000, rodata.ljust(64, b"\0")),
        Section(".data", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, text_addr + 0x20_0000, bytes(64)),
        Section(".bss", SHT_NOBITS, SHF_ALLOC | SHF_WRITE, text_addr + 0x30_0000, size=0x1000),
    ]
    if build_id is not None:
        sections.append(
            Section(
                ".note.gnu.build-id",
                SHT_NOTE,
                SHF_ALLOC,
                text_addr + 0x40_0000,
                note(b"GNU", NT_GNU_BUILD_ID, build_id, little_endian=little_endian),
                align=4,
            )
        )
    return sections


def elf_exec(
    symbols: Sequence[Symbol] = (),
    *,
    bits: int = 64,
    little_endian: bool = True,
    e_machine: int = EM_X86_64,
    e_type: int = ET_EXEC,
    sections: Sequence[Section] | None = None,
    with_symtab: bool = True,
) -> bytes:
    """An ELF image with the given allocated sections (default: `kernel_sections()`) and, unless
    `with_symtab` is False (a stripped image), a `.symtab` holding `symbols` plus `.strtab`;
    always a `.shstrtab`. Locals are written before globals, as the ELF rules require."""
    sizes = _layout(bits)
    e = _endian(little_endian)
    allocated = (
        list(sections) if sections is not None else kernel_sections(little_endian=little_endian)
    )
    names = [s.name for s in allocated]
    extra = [".symtab", ".strtab"] if with_symtab else []
    all_names = ["", *names, *extra, ".shstrtab"]
    shstrtab = b"\0"
    name_offsets = {"": 0}
    for name in all_names[1:]:
        name_offsets[name] = len(shstrtab)
        shstrtab += name.encode() + b"\0"
    index_of = {name: i for i, name in enumerate(all_names)}

    symtab = b""
    strtab = b"\0"
    first_global = 1
    if with_symtab:
        ordered = sorted(symbols, key=lambda s: s.binding != STB_LOCAL)
        first_global = 1 + sum(1 for s in ordered if s.binding == STB_LOCAL)
        entries = [(0, 0, 0, 0, 0, 0)]
        for sym in ordered:
            name_at = len(strtab)
            strtab += sym.name.encode() + b"\0"
            shndx = {"ABS": SHN_ABS, "UNDEF": SHN_UNDEF}.get(sym.section)
            if shndx is None:
                shndx = index_of[sym.section]
            info = (sym.binding << 4) | sym.type
            entries.append((name_at, info, 0, shndx, sym.value, sym.size))
        for name_at, info, other, shndx, value, size in entries:
            if bits == 64:
                symtab += struct.pack(f"{e}IBBHQQ", name_at, info, other, shndx, value, size)
            else:
                symtab += struct.pack(f"{e}IIIBBH", name_at, value, size, info, other, shndx)

    body = bytearray(bytes(sizes["ehsize"]))
    headers: list[tuple] = [(0, SHT_NULL, 0, 0, 0, 0, 0, 0, 0, 0)]

    def place(
        name: str,
        sh_type: int,
        flags: int,
        addr: int,
        data: bytes,
        *,
        size=None,
        link=0,
        info=0,
        align=1,
        entsize=0,
    ) -> None:
        offset = _align(len(body), max(align, 1))
        body.extend(bytes(offset - len(body)))
        if sh_type != SHT_NOBITS:
            body.extend(data)
        length = size if size is not None else len(data)
        headers.append(
            (name_offsets[name], sh_type, flags, addr, offset, length, link, info, align, entsize)
        )

    for sec in allocated:
        place(
            sec.name,
            sec.sh_type,
            sec.flags,
            sec.addr,
            sec.data,
            size=sec.size,
            link=sec.link,
            info=sec.info,
            align=sec.align,
            entsize=sec.entsize,
        )
    if with_symtab:
        place(
            ".symtab",
            SHT_SYMTAB,
            0,
            0,
            symtab,
            link=index_of[".strtab"],
            info=first_global,
            align=8 if bits == 64 else 4,
            entsize=sizes["symsize"],
        )
        place(".strtab", SHT_STRTAB, 0, 0, strtab)
    place(".shstrtab", SHT_STRTAB, 0, 0, shstrtab)

    shoff = _align(len(body), 8)
    body.extend(bytes(shoff - len(body)))
    for name_at, sh_type, flags, addr, offset, size, link, info, align, entsize in headers:
        layout = "IIQQQQIIQQ" if bits == 64 else "IIIIIIIIII"
        fields = (name_at, sh_type, flags, addr, offset, size, link, info, align, entsize)
        body.extend(struct.pack(f"{e}{layout}", *fields))
    body[: sizes["ehsize"]] = ehdr(
        bits=bits,
        little_endian=little_endian,
        e_type=e_type,
        e_machine=e_machine,
        shoff=shoff,
        shnum=len(headers),
        shstrndx=len(headers) - 1,
    )
    return bytes(body)


#: ELF header fields by name: (offset in ELF64, offset in ELF32, struct code).
EHDR_FIELDS = {
    "e_type": (16, 16, "H"),
    "e_machine": (18, 18, "H"),
    "e_phoff": (32, 28, "word"),
    "e_shoff": (40, 32, "word"),
    "e_phentsize": (54, 42, "H"),
    "e_phnum": (56, 44, "H"),
    "e_shentsize": (58, 46, "H"),
    "e_shnum": (60, 48, "H"),
}


def patch_ehdr(image: bytes, **fields: int) -> bytes:
    """`image` with ELF header fields replaced; class and byte order are read from it."""
    out = bytearray(image)
    bits = 64 if image[4] == 2 else 32
    e = "<" if image[5] == 1 else ">"
    for name, value in fields.items():
        off64, off32, code = EHDR_FIELDS[name]
        if code == "word":
            code = "Q" if bits == 64 else "I"
        struct.pack_into(e + code, out, off64 if bits == 64 else off32, value)
    return bytes(out)


def system_map(symbols: Iterable[tuple]) -> bytes:
    """Text symbol table lines `ADDRESS TYPE NAME`; a symbol given as a 4-tuple
    `(value, letter, name, module)` gets the kallsyms `\\t[module]` column."""
    lines = []
    for value, letter, name, *module in symbols:
        line = f"{value:016x} {letter} {name}"
        if module:
            line += f"\t[{module[0]}]"
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()
