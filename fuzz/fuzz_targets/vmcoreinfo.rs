//! VMCOREINFO text: parse, every lookup, and the merge of several sources (`parse_all`, as
//! a dump with a note and a kdump sub-header copy has). The input's NUL bytes separate the
//! sources (`parse` itself stops at the first one); the first source comes twice, as real
//! dumps repeat it.
#![no_main]

use kvm_rs::formats::vmcoreinfo::{self, VmcoreInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let info = VmcoreInfo::parse(data);
    kvm_rs_fuzz::query_vmcoreinfo(&info);
    // Every key it lists, looked up again; values parsed as each key family would be.
    let keys: Vec<String> = info
        .entries()
        .map(|(k, _)| k.to_owned())
        .take(256)
        .collect();
    for key in &keys {
        if let Some(value) = info.get(key) {
            let _ = vmcoreinfo::parse_hex(value);
            let _ = vmcoreinfo::parse_number(value);
        }
    }
    let _ = info.entries().count();

    let mut sources: Vec<&[u8]> = data.split(|&b| b == 0).take(8).collect();
    if let Some(&first) = sources.first() {
        sources.push(first);
    }
    let merged = VmcoreInfo::parse_all(sources);
    kvm_rs_fuzz::query_vmcoreinfo(&merged);
    for key in &keys {
        let _ = merged.get(key);
    }
    let _ = merged.entries().count();
});
