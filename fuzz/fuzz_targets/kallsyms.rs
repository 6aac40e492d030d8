//! The kernel's own kallsyms tables, decoded from fake kernel memory.
//!
//! Input: one flags byte (bit 0 big-endian, bit 1 4-byte longs, bits 2-7 the symbol limit,
//! 0 meaning all of them), six little-endian u32 offsets from `MEMORY_BASE` (kallsyms_names,
//! _num_syms, _token_table, _token_index, _offsets, _relative_base), then the memory itself.
//! The table addresses reach the decoder as a VMCOREINFO text naming them, as in a dump.
#![no_main]

use kvm_rs::formats::vmcoreinfo::VmcoreInfo;
use kvm_rs::kernel::kallsyms::{self, Tables};
use kvm_rs::kernel::ReadFn;
use kvm_rs_fuzz::{fake_memory, words_of, MEMORY_BASE};
use libfuzzer_sys::fuzz_target;

const TABLES: [&str; 6] = [
    "kallsyms_names",
    "kallsyms_num_syms",
    "kallsyms_token_table",
    "kallsyms_token_index",
    "kallsyms_offsets",
    "kallsyms_relative_base",
];
const HEADER: usize = 1 + 4 * TABLES.len();

fuzz_target!(|data: &[u8]| {
    let Some((header, memory)) = data.split_at_checked(HEADER) else {
        return;
    };
    let Some((&flags, offsets)) = header.split_first() else {
        return;
    };
    let mut text = String::new();
    for (name, raw) in TABLES.iter().zip(offsets.chunks_exact(4)) {
        let offset = raw.try_into().map_or(0, u32::from_le_bytes);
        text.push_str(&format!(
            "SYMBOL({name})={:x}\n",
            MEMORY_BASE + u64::from(offset)
        ));
    }
    // No OSRELEASE: nothing is kept in the build cache between inputs.
    let info = VmcoreInfo::parse(text.as_bytes());
    let Some(tables) = Tables::from_vmcoreinfo(&info) else {
        return;
    };
    let limit = match flags >> 2 {
        0 => usize::MAX,
        n => usize::from(n) * 8,
    };
    let memory_fn = fake_memory(memory, true);
    let read: ReadFn<'_> = &memory_fn;
    // A sample as the identity check decodes it; the whole table as CORE_SYMBOLS does.
    let sample = kallsyms::decode(read, words_of(flags), &tables, limit);
    let whole = kallsyms::decode_table(read, words_of(flags), &tables, &info);
    if kvm_rs_fuzz::verbose() {
        match (&sample, &whole) {
            (Ok(symbols), Ok(table)) => {
                eprintln!("kallsyms: a sample of {} symbols", symbols.len());
                let mut visit = |name: &[u8], _: usize, symbol: kvm_rs::symbols::Symbol| {
                    let name = String::from_utf8_lossy(name);
                    eprintln!("{:016x} {} {name}", symbol.value, char::from(symbol.letter));
                };
                table.for_each(&mut visit);
            }
            (Err(e), _) | (_, Err(e)) => eprintln!("kallsyms: {e}"),
        }
    }
});
