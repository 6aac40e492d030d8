//! The backtrace unwinders (x86_64 ORC, aarch64 frame records) over fake kernel memory.
//!
//! Input: one flags byte (bit 0 aarch64, bits 1-2 the release: 5.10, 6.1, 6.3, 6.12), an
//! `NT_PRSTATUS` register block (34 little-endian u64: x86_64 uses the first 27), five
//! little-endian u32 offsets from `KERNEL_BASE` (`__start_orc_unwind_ip`,
//! `__stop_orc_unwind_ip`, `__start_orc_unwind`, `_stext`, `_etext`), then kernel memory at
//! `KERNEL_BASE` (ORC tables, text, stacks). Functions start every 256 bytes of the text.
#![no_main]

use kvm_rs::formats::vmcoreinfo::VmcoreInfo;
use kvm_rs::kernel::ReadFn;
use kvm_rs::translate::unwind::{
    aarch64::Aarch64, x86_64::X86_64, Env, SavedLayout, Unwind, MAX_FRAMES, PR_REG_64,
};
use kvm_rs_fuzz::{fake_memory, MEMORY_BASE};
use libfuzzer_sys::fuzz_target;

/// Where the memory the input describes lies: a kernel address on both machines.
const KERNEL_BASE: u64 = 0xffff_ffff_8100_0000;
const REGISTERS: usize = 34 * 8;
const SYMBOLS: [&str; 5] = [
    "__start_orc_unwind_ip",
    "__stop_orc_unwind_ip",
    "__start_orc_unwind",
    "_stext",
    "_etext",
];
const RELEASES: [&str; 4] = ["5.10.0-fuzz", "6.1.0-fuzz", "6.3.0-fuzz", "6.12.0-fuzz"];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((registers, rest)) = rest.split_at_checked(REGISTERS) else {
        return;
    };
    let Some((table, memory)) = rest.split_at_checked(4 * SYMBOLS.len()) else {
        return;
    };
    let values: Vec<u64> = table
        .chunks_exact(4)
        .map(|c| KERNEL_BASE.wrapping_add(u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
        .collect();
    let release = RELEASES[usize::from(flags >> 1 & 3)];
    let info = VmcoreInfo::parse(
        format!("OSRELEASE={release}\nNUMBER(KERNELPACMASK)=0xff80000000000000\n").as_bytes(),
    );
    let memory_fn = fake_memory(memory, true);
    let read_fn = |addr: u64, len: usize| {
        memory_fn(
            addr.wrapping_sub(KERNEL_BASE).wrapping_add(MEMORY_BASE),
            len,
        )
    };
    let read: ReadFn<'_> = &read_fn;
    let symbol = |name: &str| {
        SYMBOLS
            .iter()
            .position(|s| *s == name)
            .and_then(|i| values.get(i).copied())
    };
    let (Some(&text_start), Some(&text_end)) = (values.get(3), values.get(4)) else {
        return;
    };
    let function_start = |addr: u64| {
        (text_start..text_end)
            .contains(&addr)
            .then_some(addr & !0xff)
    };
    let env = Env {
        read,
        symbol: &symbol,
        function_start: &function_start,
        vmcoreinfo: &info,
        big_endian: false,
        module: &|_| None,
    };
    let unwinder: &dyn Unwind = if flags & 1 != 0 { &Aarch64 } else { &X86_64 };
    let mut prstatus = vec![0u8; PR_REG_64];
    prstatus.extend_from_slice(registers);
    let Some(regs) = unwinder.registers(&prstatus, false) else {
        return;
    };
    let frames = unwinder.unwind(&env, &regs);
    assert!(frames.len() <= MAX_FRAMES);
    // The same memory as a blocked task: its task_struct at the first register's address.
    let layout = SavedLayout {
        stack: 0x20,
        task: vec![0x100, 0x108, 0x110],
        frame: vec![40, 48, 56],
    };
    if let Some(&task) = regs.first() {
        if let Ok(frames) = unwinder.blocked(&env, &layout, task) {
            assert!(frames.len() <= MAX_FRAMES);
        }
    }
    if kvm_rs_fuzz::verbose() {
        for frame in &frames {
            eprintln!(
                "{:#x} (at {:#x}) reliable {}",
                frame.pc, frame.lookup, frame.reliable
            );
        }
    }
});
