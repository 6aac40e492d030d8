//! The BTF reader: the input is a BTF blob (the dump's `__start_BTF`..`__stop_BTF`, or a
//! vmlinux's `.BTF`). If it parses, every lookup the triage makes runs over it: the task
//! layout, the structs it names, and every query on the first types and on ids the input
//! itself holds (its last bytes), so dangling ids, cycles and absurd counts are reached.
#![no_main]

use kvm_rs::btf::Btf;
use kvm_rs::kernel::tasks::TaskLayout;
use kvm_rs::kernel::Words;
use libfuzzer_sys::fuzz_target;

/// Types queried one by one (a real blob has ~100,000; each query is bounded on its own).
const QUERIED: u32 = 256;
const NAMES: [&str; 6] = [
    "task_struct",
    "list_head",
    "cred",
    "signal_struct",
    "thread_info",
    "",
];

fuzz_target!(|data: &[u8]| {
    let tail: Vec<u32> = data
        .rchunks_exact(4)
        .take(8)
        .map(|raw| raw.try_into().map_or(0, u32::from_le_bytes))
        .collect();
    let Ok(btf) = Btf::parse(data.to_vec()) else {
        return;
    };
    for wide in [true, false] {
        let words = Words {
            big_endian: btf.big_endian(),
            wide,
        };
        let _ = TaskLayout::from_btf(&btf, words);
    }
    for name in NAMES {
        if let Some(id) = btf.find_struct(name) {
            query(&btf, id);
        }
    }
    let count = u32::try_from(btf.type_count()).unwrap_or(u32::MAX);
    for id in (0..=count.min(QUERIED)).chain(tail) {
        query(&btf, id);
    }
});

fn query(btf: &Btf, id: u32) {
    let _ = btf.get(id);
    let _ = btf.name(id);
    let _ = btf.resolve(id);
    let _ = btf.kind(id);
    let _ = btf.size_of(id, 8);
    let _ = btf.array(id);
    let _ = btf.int(id);
    let _ = btf.pointee(id);
    for (name_off, member) in btf.members(id).into_iter().take(16) {
        let _ = btf.string(name_off);
        let _ = btf.size_of(member.type_id, 4);
    }
    for name in NAMES {
        let _ = btf.member(id, name);
    }
    let _ = btf.offset_of(id, "uid.val");
    let _ = btf.offset_of(id, "thread_info.cpu");
}
