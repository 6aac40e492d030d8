"""The synthetic kernel of the message tests: a release, a System.map and its VMCOREINFO.

Its image starts at `TEXT_ADDR` (x86_64's usual 0xffffffff81000000), unrandomized.
"""

from __future__ import annotations

import elfwriter

TEST_RELEASE = "6.1.0-test"
TEXT_ADDR = elfwriter.TEXT_ADDR

#: Symbols of the synthetic kernel: (link-time value, nm letter, name).
SYMBOLS = [
    (TEXT_ADDR, "T", "_text"),
    (TEXT_ADDR, "T", "_stext"),
    (TEXT_ADDR + 0x40, "t", "local_func"),
    (TEXT_ADDR + 0x10_0000, "R", "linux_banner"),
    (TEXT_ADDR + 0x20_0000, "D", "jiffies"),
    (TEXT_ADDR + 0x20_0000, "D", "jiffies_64"),
    (TEXT_ADDR + 0x20_0008, "d", "local_data"),
    (TEXT_ADDR + 0x30_0000, "B", "mem_section"),
    (TEXT_ADDR + 0x30_0010, "b", "local_bss"),
    (0x1EA, "A", "kexec_control_code_size"),
    (TEXT_ADDR + 0x40_0000, "B", "_end"),
]


def synthetic_vmcoreinfo(extra: dict[str, str | None] | None = None) -> bytes:
    """VMCOREINFO of the synthetic kernel (release TEST_RELEASE, unrandomized). `extra` adds
    or replaces keys (`{"SYMBOL(jiffies)": "ffffffff81200000"}`); a value of None removes one."""
    entries: dict[str, str | None] = {
        "OSRELEASE": TEST_RELEASE,
        "PAGESIZE": "4096",
        "SYMBOL(_stext)": f"{TEXT_ADDR:x}",
        "KERNELOFFSET": "0",
    }
    entries.update(extra or {})
    return elfwriter.vmcoreinfo_text({k: v for k, v in entries.items() if v is not None})
