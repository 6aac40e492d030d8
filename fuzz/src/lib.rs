//! What the fuzz targets share: driving an opened core through its reads and facts, fake
//! kernel memory for the decoders, and the panic hook that lets kvm_rs's own guard around
//! goblin do its work.
//!
//! The targets never panic themselves: every library result is matched, never unwrapped, so
//! a crash is always the library's.

use std::sync::{Arc, Once};

use kvm_rs::errors::{Error, Reason};
use kvm_rs::formats::vmcoreinfo::VmcoreInfo;
use kvm_rs::formats::{self, Address, Core, Origin};
use kvm_rs::kernel::Words;
use kvm_rs::mapping::{InMemory, Medium};

/// Where the decoder targets put the fake kernel memory: a 32-bit address, so the same
/// input works for 4- and 8-byte pointers.
pub const MEMORY_BASE: u64 = 0xc000_0000;

/// Physical addresses every core target reads besides those the core itself names.
const FIXED_PHYS: [u64; 6] = [
    0,
    0x1000,
    0x9_f000,
    0x100_0000,
    0x2_0000_0000,
    u64::MAX - 0x7ff,
];

/// How many ranges and segments of a core are read (a hostile header may claim thousands).
const MAX_PIECES: usize = 8;

/// Recognises `data` as a core file and, if it opens, reads it through every format-facing
/// call: physical reads where the core says it has memory, virtual reads of its segments,
/// write planning (no write), and the facts `info` shows.
pub fn open_and_read(data: &[u8]) {
    let medium: Arc<dyn Medium> = Arc::new(InMemory(data.to_vec()));
    if let Ok(core) = formats::open_core(medium, Origin::Dump) {
        read_core(&core);
    }
}

/// Exercises an opened core (no kernel symbols needed).
pub fn read_core(core: &Core) {
    let _ = core.body.facts();
    let _ = core.machine_record();
    let _ = core.body.header_phys_base();
    let _ = core.vmcoreinfo.osrelease();
    let _ = core.vmcoreinfo.page_size();
    let _ = core.vmcoreinfo.kernel_offset();
    let _ = core.vmcoreinfo.symbols().count();
    let _ = Words::of(core);

    let mut addrs: Vec<u64> = FIXED_PHYS.to_vec();
    for (start, end) in core.body.physical_ranges().into_iter().take(MAX_PIECES) {
        addrs.push(start);
        addrs.push(end.wrapping_sub(16));
        addrs.push(start.wrapping_add(end.wrapping_sub(start) / 2));
    }
    let mut virt: Vec<u64> = Vec::new();
    for seg in core.body.segments().iter().take(MAX_PIECES) {
        addrs.push(seg.paddr);
        addrs.push(seg.paddr.wrapping_add(seg.memsz).wrapping_sub(8));
        virt.push(seg.vaddr);
        virt.push(seg.vaddr.wrapping_add(seg.filesz).wrapping_sub(8));
    }
    let mut buf = [0u8; 64];
    let mut page = vec![0u8; 0x1800];
    for &pa in &addrs {
        let _ = core.read_phys(pa, &mut buf);
        // Across a page boundary.
        let _ = core.read_phys(pa.wrapping_add(0x800), &mut page);
        let _ = core.body.write_extent(Address::Physical(pa), 32);
    }
    // Virtual addresses the format may map itself (ELF p_vaddr): the segments' and
    // VMCOREINFO's symbols.
    virt.extend(core.vmcoreinfo.symbols().map(|(_, va)| va).take(MAX_PIECES));
    for va in virt {
        let _ = core.body.read_virt(va, &mut buf);
        let _ = core.body.write_extent(Address::Virtual(va), 32);
    }
}

/// Kernel memory for the decoders: `memory` at `MEMORY_BASE`, nothing elsewhere. A read
/// past the end returns what there is (as `Session::read_for_decoder` does) when `partial`,
/// else fails (as `Session::dmesg` does). Never allocates more than the memory holds.
pub fn fake_memory(
    memory: &[u8],
    partial: bool,
) -> impl Fn(u64, usize) -> Result<Vec<u8>, Error> + '_ {
    move |addr: u64, len: usize| {
        let missing = Err(Error::InvalidAddress {
            addr,
            reason: Reason::NotInDump,
        });
        let Some(at) = addr.checked_sub(MEMORY_BASE) else {
            return missing;
        };
        let Ok(at) = usize::try_from(at) else {
            return missing;
        };
        let Some(rest) = memory.get(at..) else {
            return missing;
        };
        match rest.get(..len) {
            Some(all) => Ok(all.to_vec()),
            None if partial && !rest.is_empty() => Ok(rest.to_vec()),
            None => Err(Error::ShortRead {
                addr: addr.wrapping_add(rest.len() as u64),
            }),
        }
    }
}

/// Word layout from the low bits of a flags byte: bit 0 big-endian, bit 1 4-byte longs.
pub fn words_of(flags: u8) -> Words {
    Words {
        big_endian: flags & 1 != 0,
        wide: flags & 2 == 0,
    }
}

/// VMCOREINFO lookups that every consumer makes.
pub fn query_vmcoreinfo(info: &VmcoreInfo) {
    let _ = info.text().len();
    let _ = info.is_empty();
    let _ = info.osrelease();
    let _ = info.build_id();
    let _ = info.page_size();
    let _ = info.kernel_offset();
    for name in ["_stext", "init_uts_ns", "swapper_pg_dir", "prb", "log_buf"] {
        let _ = info.symbol(name);
    }
    for name in [
        "phys_base",
        "pgtable_l5_enabled",
        "VA_BITS",
        "KERNEL_IMAGE_SIZE",
    ] {
        let _ = info.number(name);
    }
    let _ = info.symbols().count();
}

/// Under libfuzzer-sys every panic aborts, even one the library catches. kvm_rs parses ELF
/// exec files with goblin inside `catch_unwind` (goblin has panicked on malformed input), so
/// a panic raised in goblin (or scroll, its reader) is left to unwind to that guard; any
/// other panic still aborts and is a finding.
pub fn let_goblin_panics_unwind() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let aborting = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parser = info.location().is_some_and(|l| {
                let file = l.file();
                file.contains("/goblin-") || file.contains("/scroll-")
            });
            if !in_parser {
                aborting(info);
            }
        }));
    });
}

/// `KVM_RS_FUZZ_VERBOSE=1`: the targets print what an input decodes to (for checking that
/// a seed reaches the code it was made for: `cargo fuzz run dmesg fuzz/seeds/dmesg/FILE`).
pub fn verbose() -> bool {
    static VERBOSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("KVM_RS_FUZZ_VERBOSE").is_some_and(|v| v != "0"))
}
