//! Exec files: an ELF image's `.symtab` (goblin, under kvm_rs's own guard), or System.map /
//! kallsyms text. Then the few-name lookup open makes, the name index nlist builds, and
//! lookups of names the file holds.
#![no_main]

use kvm_rs::symbols::{ExecBytes, ExecFile};
use libfuzzer_sys::fuzz_target;

/// Names every identity check asks for, and some the table may hold.
const NAMES: [&str; 6] = [
    "_text",
    "_stext",
    "jiffies",
    "init_uts_ns",
    "linux_banner",
    "_end",
];

fuzz_target!(|data: &[u8]| {
    kvm_rs_fuzz::let_goblin_panics_unwind();
    // Text from procfs is always kallsyms: the second reading of a short input.
    let from_procfs = data.len() % 7 == 3;
    let Ok(exec) = ExecFile::parse(b"fuzz", ExecBytes::Owned(data.to_vec()), from_procfs) else {
        return;
    };
    let _ = exec.format.name();
    let _ = exec.symbol_count_hint();
    let _ = exec.facts.build_id.as_deref();
    let found = exec.lookup_few(&NAMES);
    // Asked again: from the memo.
    let _ = exec.lookup_few(&NAMES[..3]);
    for sym in found.values() {
        let _ = sym.n_type();
        let _ = exec.image_bytes(sym.value, 64);
    }
    // The first names in the table, looked up through the index.
    let mut names: Vec<Vec<u8>> = Vec::new();
    exec.for_each(|name, _, _| {
        if names.len() < 16 {
            names.push(name.to_vec());
        }
    });
    let index = exec.index();
    let _ = index.len();
    for name in names
        .iter()
        .map(Vec::as_slice)
        .chain(NAMES.iter().map(|n| n.as_bytes()))
    {
        if let Some(sym) = index.get(exec.data(), name) {
            let _ = sym.is_global();
        }
    }
    // After the index exists, lookup_few takes it.
    let _ = exec.lookup_few(&["_sinittext", "_etext"]);
});
