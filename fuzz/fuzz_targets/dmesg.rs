//! The kernel log (lockless `prb` ring of kernels ≥ 5.10, or the older `log_buf`), decoded
//! from fake kernel memory with nothing but VMCOREINFO.
//!
//! Input: a VMCOREINFO text, two NUL bytes, one flags byte (bit 0 big-endian, bit 1 4-byte
//! longs), then kernel memory at `MEMORY_BASE` (the text's SYMBOL() values point into it).
#![no_main]

use kvm_rs::formats::vmcoreinfo::VmcoreInfo;
use kvm_rs::kernel::{dmesg, ReadFn};
use kvm_rs_fuzz::{fake_memory, words_of};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.windows(2).position(|w| w == b"\0\0") else {
        return;
    };
    let (text, rest) = data.split_at(split);
    let Some((&flags, memory)) = rest.get(2..).and_then(|r| r.split_first()) else {
        return;
    };
    let info = VmcoreInfo::parse(text);
    // As Session::dmesg reads: a read that stops short fails.
    let memory_fn = fake_memory(memory, false);
    let read: ReadFn<'_> = &memory_fn;
    let records = dmesg::records(read, &info, words_of(flags));
    if let Ok(records) = &records {
        for record in records.iter().take(64) {
            let _ = (record.text.split('\n').count(), record.caller.as_deref());
        }
    }
    if kvm_rs_fuzz::verbose() {
        match &records {
            Ok(records) => {
                for record in records {
                    eprintln!(
                        "seq {} level {}: {:?}",
                        record.seq, record.level, record.text
                    );
                }
            }
            Err(e) => eprintln!("dmesg: {e}"),
        }
    }
});
