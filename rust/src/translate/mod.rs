//! Machines: one record per architecture (name, ELF machine, pointer width, byte order, where
//! the kernel image lies, the page-table root's symbols) and, where we have one, its
//! translator of kernel virtual addresses. This is the one place that names machines: the
//! formats ask it what an ELF `e_machine` is called, identity and the kernel decoders ask it
//! for pointer widths and image ranges, and the session asks it for a translator.

pub mod aarch64;
pub mod unwind;
pub mod x86_64;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use crate::formats::segments::Segment;
use crate::formats::vmcoreinfo::VmcoreInfo;
use crate::formats::Gap;

/// Why an address does not translate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Not a canonical address, or no page maps it.
    NotMapped,
    /// A page table the walk needs is not in the dump (or cut off, or corrupt).
    Table(Gap),
}

/// A machine's kernel address translation: virtual → physical.
pub trait Translate: Send + Sync {
    /// The physical address of kernel virtual address `va`. `read_entry(pa)` reads one
    /// 8-byte page-table entry of physical memory at `pa`, already in host order.
    fn translate(
        &self,
        va: u64,
        read_entry: &dyn Fn(u64) -> Result<u64, Gap>,
    ) -> Result<u64, Fault>;
    /// The number of page-table levels the walk uses.
    fn pgtable_levels(&self) -> u8;
    /// Forgets remembered translations (after a write to the dump, which may change a table).
    fn forget_cached(&self) {}
}

/// Translations remembered per handle: virtual page → physical frame, bounded (emptied when
/// full: reads come in bursts over a few structures, so a refill is cheap).
pub struct Tlb {
    pages: Mutex<HashMap<u64, u64>>,
}

impl Tlb {
    pub const ENTRIES: usize = 1 << 16;

    pub fn new() -> Tlb {
        Tlb {
            pages: Mutex::new(HashMap::new()),
        }
    }

    /// The physical address of `va` in pages of 2^`shift` bytes, walking on a miss.
    pub fn translate(
        &self,
        va: u64,
        shift: u32,
        walk: impl FnOnce() -> Result<u64, Fault>,
    ) -> Result<u64, Fault> {
        let page = va >> shift;
        let offset = va & ((1u64 << shift) - 1);
        if let Some(frame) = self.lock().get(&page) {
            return Ok(frame << shift | offset);
        }
        let paddr = walk()?;
        let mut pages = self.lock();
        if pages.len() >= Tlb::ENTRIES {
            pages.clear();
        }
        pages.insert(page, paddr >> shift);
        Ok(paddr)
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.pages.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub fn fill(&self, pages: impl Iterator<Item = u64>) {
        let mut map = self.lock();
        map.clear();
        map.extend(pages.map(|p| (p, p)));
    }

    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.lock().len()
    }
}

impl Default for Tlb {
    fn default() -> Tlb {
        Tlb::new()
    }
}

/// What a translator is built from: the dump's VMCOREINFO and what the exec file and the
/// dump format know of the kernel's layout.
pub struct KernelLayout<'a> {
    pub vmcoreinfo: &'a VmcoreInfo,
    /// Runtime `[_text, _end)`, where the exec file names both.
    pub image: Option<Range<u64>>,
    /// Runtime address of the page-table root, from the exec file (VMCOREINFO first).
    pub exec_root: Option<u64>,
    /// `phys_base` as the dump's own header records it (kdump sub-header).
    pub header_phys_base: Option<u64>,
    /// The dump's PT_LOAD segments, for machines that find their image mapping there.
    pub segments: &'a [Segment],
}

type Builder = fn(&KernelLayout<'_>) -> Option<Box<dyn Translate>>;

/// One architecture, as the rest of the crate sees it.
pub struct Machine {
    /// The Linux name (`uname -m`).
    pub name: &'static str,
    pub elf_machine: u16,
    /// `long` and pointers are 8 bytes.
    pub wide: bool,
    /// The usual byte order (a dump's own header says which it has).
    pub big_endian: bool,
    /// `long long` is 8-aligned in structs (4-aligned on i386 alone).
    pub long_long_align8: bool,
    /// Kernel image addresses lie at or above this; None: the exec file's `_text`..`_end`.
    pub image_floor: Option<u64>,
    /// Names of the top page table, as VMCOREINFO `SYMBOL()` or in the exec file, best first.
    pub root_symbols: &'static [&'static str],
    translator: Option<Builder>,
    /// Its backtraces: crash registers and the unwinding data (`translate/unwind/`).
    pub unwinder: Option<&'static dyn crate::translate::unwind::Unwind>,
}

impl Machine {
    /// The translator for this dump, where the machine has one and the layout suffices.
    pub fn translator(&self, layout: &KernelLayout<'_>) -> Option<Box<dyn Translate>> {
        (self.translator?)(layout)
    }

    pub fn can_translate(&self) -> bool {
        self.translator.is_some()
    }

    /// Is `value` a kernel image address (identity compares only those)?
    pub fn in_image(&self, value: u64, exec_image: Option<&Range<u64>>) -> bool {
        match self.image_floor {
            Some(floor) => value >= floor,
            None => exec_image.is_some_and(|range| range.contains(&value)),
        }
    }
}

const fn other(name: &'static str, elf_machine: u16, wide: bool, big_endian: bool) -> Machine {
    Machine {
        name,
        elf_machine,
        wide,
        big_endian,
        long_long_align8: true,
        image_floor: None,
        root_symbols: &[],
        translator: None,
        unwinder: None,
    }
}

static MACHINES: [Machine; 13] = [
    Machine {
        name: "x86_64",
        elf_machine: 62,
        wide: true,
        big_endian: false,
        long_long_align8: true,
        image_floor: Some(x86_64::START_KERNEL_MAP),
        // Kernels before 4.13 call the top table init_level4_pgt.
        root_symbols: &["init_top_pgt", "init_level4_pgt", "swapper_pg_dir"],
        translator: Some(x86_64::build),
        unwinder: Some(&crate::translate::unwind::x86_64::X86_64),
    },
    Machine {
        name: "aarch64",
        elf_machine: 183,
        wide: true,
        big_endian: false,
        long_long_align8: true,
        image_floor: None,
        root_symbols: &["swapper_pg_dir"],
        translator: Some(aarch64::build),
        unwinder: Some(&crate::translate::unwind::aarch64::Aarch64),
    },
    Machine {
        long_long_align8: false,
        ..other("i386", 3, false, false)
    },
    other("arm", 40, false, false),
    other("ppc64", 21, true, true),
    other("ppc", 20, false, true),
    other("s390x", 22, true, true),
    other("s390", 22, false, true),
    other("riscv64", 243, true, false),
    other("riscv32", 243, false, false),
    other("loongarch64", 258, true, false),
    other("mips64", 8, true, false),
    other("mips", 8, false, false),
];

/// The record of a machine name; 32-bit x86 goes by several names.
pub fn machine(name: &str) -> Option<&'static Machine> {
    let name = match name {
        "i486" | "i586" | "i686" => "i386",
        "ppc64le" => "ppc64",
        "armv7l" | "armv6l" => "arm",
        other => other,
    };
    MACHINES.iter().find(|m| m.name == name)
}

/// The machine of an ELF `e_machine` in an ELF of that class.
pub fn elf_machine(e_machine: u16, class64: bool) -> Option<&'static Machine> {
    let mut candidates = MACHINES.iter().filter(|m| m.elf_machine == e_machine);
    let first = candidates.next()?;
    if first.wide == class64 {
        return Some(first);
    }
    candidates.find(|m| m.wide == class64).or(Some(first))
}

/// The machine of a dump whose producer named none (QEMU's arm64 kdump says `Unknown`):
/// VMCOREINFO lines only one architecture exports.
pub fn machine_from_vmcoreinfo(info: &VmcoreInfo) -> Option<&'static Machine> {
    let name = if info.number("kimage_voffset").is_some() || info.number("TCR_EL1_T1SZ").is_some() {
        "aarch64"
    } else if info.symbol("init_top_pgt").is_some() || info.symbol("init_level4_pgt").is_some() {
        "x86_64"
    } else {
        return None;
    };
    machine(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_class_picks_the_machine() {
        assert_eq!(elf_machine(22, false).map(|m| m.name), Some("s390"));
        assert_eq!(elf_machine(22, true).map(|m| m.name), Some("s390x"));
        assert_eq!(elf_machine(62, true).map(|m| m.name), Some("x86_64"));
        assert!(elf_machine(9999, true).is_none());
        assert_eq!(machine("i686").map(|m| m.name), Some("i386"));
    }

    #[test]
    fn machine_named_by_vmcoreinfo() {
        let arm = VmcoreInfo::parse(b"NUMBER(kimage_voffset)=0xffffd62013c00000\n");
        assert_eq!(
            machine_from_vmcoreinfo(&arm).map(|m| m.name),
            Some("aarch64")
        );
        let x86 = VmcoreInfo::parse(b"SYMBOL(init_level4_pgt)=ffffffff81c0a000\n");
        assert_eq!(
            machine_from_vmcoreinfo(&x86).map(|m| m.name),
            Some("x86_64")
        );
        assert!(machine_from_vmcoreinfo(&VmcoreInfo::parse(b"OSRELEASE=1\n")).is_none());
    }
}
