//! ELF vmcores (QEMU, makedumpfile -E, /proc/vmcore copies): `formats::open_core`, then
//! physical and virtual reads and the facts. Inputs that are not ELF go to the other targets.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"\x7fELF") {
        kvm_rs_fuzz::open_and_read(data);
    }
});
