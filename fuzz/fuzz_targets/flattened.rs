//! makedumpfile's flattened streams (`-F`): the record index, then the kdump or ELF dump
//! inside, read through the reassembled medium.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"makedumpfile") {
        kvm_rs_fuzz::open_and_read(data);
    }
});
