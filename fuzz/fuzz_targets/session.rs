//! A whole read-only handle over a core file, with no exec file (the dump's kallsyms tables
//! are its symbols where VMCOREINFO names them): `Session::from_core` (VMCOREINFO settled or
//! searched for in memory, identity, the translator), then virtual and physical reads, the
//! kernel log, info and nlist.
#![no_main]

use std::sync::Arc;

use kvm_rs::formats::{self, Origin};
use kvm_rs::mapping::{InMemory, Medium};
use kvm_rs::session::Session;
use libfuzzer_sys::fuzz_target;

/// Kernel addresses worth a read on any dump: the x86_64 image and direct map, arm64's
/// linear map, a 32-bit kernel's, and the top of the address space.
const FIXED_VIRT: [u64; 6] = [
    0xffff_ffff_8100_0000,
    0xffff_8880_0010_0000,
    0xffff_0000_0000_0000,
    0xffff_8000_0800_0000,
    0xc000_0000,
    0xffff_ffff_ffff_f000,
];

fuzz_target!(|data: &[u8]| {
    let medium: Arc<dyn Medium> = Arc::new(InMemory(data.to_vec()));
    let Ok(core) = formats::open_core(medium, Origin::Dump) else {
        return;
    };
    let mut virt: Vec<u64> = core
        .vmcoreinfo
        .symbols()
        .map(|(_, va)| va)
        .take(8)
        .collect();
    virt.extend(FIXED_VIRT);
    let session = match Session::from_core(None, core, b"fuzz") {
        Ok(session) => session,
        Err(e) => {
            if kvm_rs_fuzz::verbose() {
                eprintln!("from_core: {e}");
            }
            return;
        }
    };
    for &va in &virt {
        let _ = session.read(va, 64);
        // Across a page boundary.
        let _ = session.read(va.wrapping_add(0xff8), 16);
    }
    let _ = session.read_physical(0, 64);
    let _ = session.read_physical(0x100_0000, 0x1008);
    let dmesg = session.dmesg();
    let info = session.info();
    let _ = session.dump_facts();
    let nlist = session.nlist(&[
        b"jiffies".to_vec(),
        b"_stext".to_vec(),
        b"_init_uts_ns".to_vec(),
    ]);
    if kvm_rs_fuzz::verbose() {
        for &va in &virt {
            let (bytes, error) = session.read(va, 16);
            eprintln!("read {va:#x}: {bytes:02x?} {error:?}");
        }
        eprintln!("dmesg: {:?}", dmesg.map(|r| r.len()));
        eprintln!("info: {:?}", info.map(|i| (i.osrelease, i.format)));
        eprintln!("nlist: {nlist:?}");
    }
    let _ = session.symbols_ready();
});
