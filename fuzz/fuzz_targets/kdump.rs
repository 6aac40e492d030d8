//! makedumpfile's kdump-compressed files: `formats::open_core` (header, sub-header,
//! bitmaps, descriptors), then page reads (decompression, the rank index) and the facts; the
//! same file alone as a split set, too.
#![no_main]

use std::sync::Arc;

use kvm_rs::mapping::{InMemory, Medium};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if !(data.starts_with(b"KDUMP   ") || data.starts_with(b"DISKDUMP")) {
        return;
    }
    kvm_rs_fuzz::open_and_read(data);
    let medium: Arc<dyn Medium> = Arc::new(InMemory(data.to_vec()));
    if let Ok(core) = kvm_rs::formats::open_split(vec![(b"part".to_vec(), medium)]) {
        kvm_rs_fuzz::read_core(&core);
    }
});
