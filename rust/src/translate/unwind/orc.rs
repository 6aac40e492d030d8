//! The x86_64 kernel's ORC tables: `.orc_unwind_ip` (an `s32` per entry, each relative to
//! its own address, sorted) and `.orc_unwind` (6-byte `struct orc_entry`s), between the
//! linker symbols `__start_orc_unwind_ip`, `__stop_orc_unwind_ip` and `__start_orc_unwind`.
//!
//! `struct orc_entry` is `s16 sp_offset, s16 bp_offset` and a 16-bit field whose layout
//! changed twice; every version is read into one form (6.4's):
//!
//! | version | kernels | bits 0-3 | 4-7 | type | signal | end |
//! |---|---|---|---|---|---|---|
//! | 1 | 4.14–6.2 | sp_reg | bp_reg | 8-9: CALL, REGS, REGS_PARTIAL | implied by type | 10 |
//! | 2 | 6.3 | sp_reg | bp_reg | 8-9: as 1 | 10 | 11 |
//! | 3 | 6.4+ | sp_reg | bp_reg | 8-10: UNDEFINED, END_OF_STACK, CALL, REGS, REGS_PARTIAL | 11 | — |
//!
//! Before 6.4 an undefined `sp_reg` means the end of the stack where `end` is set, and no
//! unwinding data otherwise. The version comes from `.orc_header` (20 bytes, a hash of the
//! layout, since 6.4 and 6.3.10) where the kernel has one, else from the release.

use super::Env;

pub const REG_UNDEFINED: u8 = 0;
pub const REG_PREV_SP: u8 = 1;
pub const REG_DX: u8 = 2;
pub const REG_DI: u8 = 3;
pub const REG_BP: u8 = 4;
pub const REG_SP: u8 = 5;
pub const REG_R10: u8 = 6;
pub const REG_R13: u8 = 7;
pub const REG_BP_INDIRECT: u8 = 8;
pub const REG_SP_INDIRECT: u8 = 9;

/// More ORC entries than a kernel has (a distribution kernel has ~400,000).
const MAX_ENTRIES: u64 = 1 << 24;
pub const ENTRY_SIZE: u64 = 6;

/// `.orc_header` of the 6.4 layout (and 6.3.10+'s backport of the header with it).
const HASH_6_4: [u8; 20] = [
    0xfe, 0x5d, 0x32, 0xbf, 0x58, 0x1b, 0xd6, 0x3b, 0x2c, 0xa9, 0xa5, 0xc6, 0x5b, 0xa5, 0xa6, 0x25,
    0xea, 0xb3, 0xfe, 0x24,
];
/// `.orc_header` of the 6.3 layout.
const HASH_6_3: [u8; 20] = [
    0xdb, 0x84, 0xae, 0xd4, 0x10, 0x3b, 0x31, 0xdd, 0x51, 0xe0, 0x17, 0xf8, 0xf7, 0x97, 0x83, 0xca,
    0x98, 0x5c, 0x2c, 0x51,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 4.14 to 6.2.
    V1,
    /// 6.3.
    V2,
    /// 6.4 and later.
    V3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No unwinding data here: the walk cannot go on.
    Undefined,
    EndOfStack,
    /// A return address below the previous frame's stack pointer.
    Call,
    /// A full `pt_regs` at the previous stack pointer.
    Regs,
    /// An iret frame (ip, cs, flags, sp, ss) at the previous stack pointer.
    RegsPartial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub sp_offset: i16,
    pub bp_offset: i16,
    pub sp_reg: u8,
    pub bp_reg: u8,
    pub kind: Kind,
    /// The next frame's pc is an interrupted one (look it up as is, not at pc - 1).
    pub signal: bool,
}

/// Decodes one little-endian `struct orc_entry` of `version`.
pub fn decode(raw: [u8; 6], version: Version) -> Entry {
    let [sp0, sp1, bp0, bp1, low, high] = raw;
    let sp_reg = low & 0xf;
    let bp_reg = low >> 4;
    let (kind, signal) = match version {
        Version::V1 | Version::V2 => {
            let end_bit = if version == Version::V1 { 2 } else { 3 };
            let end = high >> end_bit & 1 != 0;
            let code = high & 3;
            let kind = match (sp_reg, end, code) {
                (REG_UNDEFINED, true, _) => Kind::EndOfStack,
                (REG_UNDEFINED, false, _) => Kind::Undefined,
                (_, _, 0) => Kind::Call,
                (_, _, 1) => Kind::Regs,
                (_, _, 2) => Kind::RegsPartial,
                _ => Kind::Undefined,
            };
            let signal = if version == Version::V1 {
                code != 0
            } else {
                high >> 2 & 1 != 0
            };
            (kind, signal)
        }
        Version::V3 => {
            let kind = match high & 7 {
                1 => Kind::EndOfStack,
                2 => Kind::Call,
                3 => Kind::Regs,
                4 => Kind::RegsPartial,
                _ => Kind::Undefined,
            };
            (kind, high >> 3 & 1 != 0)
        }
    };
    Entry {
        sp_offset: i16::from_le_bytes([sp0, sp1]),
        bp_offset: i16::from_le_bytes([bp0, bp1]),
        sp_reg,
        bp_reg,
        kind,
        signal,
    }
}

/// The layout of the dumped kernel's entries: `.orc_header`'s hash where the kernel has one,
/// else the release (None: neither says, or the header is one we do not know).
pub fn version(env: &Env<'_>) -> Option<Version> {
    let header = (env.symbol)("__start_orc_header").zip((env.symbol)("__stop_orc_header"));
    if let Some((start, stop)) = header {
        if stop.checked_sub(start) == Some(20) {
            let hash = env.bytes(start, 20)?;
            if hash == HASH_6_4 {
                return Some(Version::V3);
            }
            if hash == HASH_6_3 {
                return Some(Version::V2);
            }
            return None;
        }
    }
    Some(match env.release()? {
        (major, _) if major > 6 => Version::V3,
        (6, minor) if minor >= 4 => Version::V3,
        (6, 3) => Version::V2,
        _ => Version::V1,
    })
}

/// The kernel image's ORC tables in the dump.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub ip_start: u64,
    pub count: u64,
    pub entries: u64,
    pub version: Version,
    /// `_stext`..`_etext`: the text the tables cover (None: not known, every address).
    pub text: Option<(u64, u64)>,
    /// `_sinittext`..`_einittext`: the init text, freed after boot but still covered (the
    /// idle tasks' stacks start in it), as the kernel's `orc_find` looks it up.
    pub init_text: Option<(u64, u64)>,
}

impl Table {
    pub fn locate(env: &Env<'_>) -> Option<Table> {
        let ip_start = (env.symbol)("__start_orc_unwind_ip")?;
        let ip_stop = (env.symbol)("__stop_orc_unwind_ip")?;
        let entries = (env.symbol)("__start_orc_unwind")?;
        let count = ip_stop.checked_sub(ip_start)? / 4;
        if count == 0 || count > MAX_ENTRIES {
            return None;
        }
        let text = (env.symbol)("_stext").zip((env.symbol)("_etext"));
        let init_text = (env.symbol)("_sinittext").zip((env.symbol)("_einittext"));
        Some(Table {
            ip_start,
            count,
            entries,
            version: version(env)?,
            text,
            init_text,
        })
    }

    /// A module's tables (`mod->arch.orc_unwind_ip`, `orc_unwind`, `num_orcs`), covering
    /// its core text; the entries have the kernel's layout.
    pub fn module(
        ip_start: u64,
        entries: u64,
        count: u64,
        version: Version,
        module: &super::ModuleText,
    ) -> Option<Table> {
        if count == 0 || count > MAX_ENTRIES {
            return None;
        }
        Some(Table {
            ip_start,
            count,
            entries,
            version,
            text: Some((module.base, module.base.checked_add(module.size)?)),
            init_text: None,
        })
    }

    /// The ip entry `index` stands for.
    fn ip(&self, env: &Env<'_>, index: u64) -> Option<u64> {
        let at = self.ip_start.checked_add(index.checked_mul(4)?)?;
        let offset = env.u32(at)? as i32;
        at.checked_add_signed(i64::from(offset))
    }

    /// The entry that covers `addr`: the last whose ip is at or below it (binary search in
    /// the dump: ~20 reads of 4 bytes, each from the page cache after the first).
    pub fn find(&self, env: &Env<'_>, addr: u64) -> Option<Entry> {
        if let Some((start, end)) = self.text {
            let init = self
                .init_text
                .is_some_and(|(start, end)| (start..end).contains(&addr));
            if !(start..end).contains(&addr) && !init {
                return None;
            }
        }
        let (mut low, mut high) = (0u64, self.count);
        while low < high {
            let mid = low.checked_add(high.checked_sub(low)? / 2)?;
            if self.ip(env, mid)? <= addr {
                low = mid.checked_add(1)?;
            } else {
                high = mid;
            }
        }
        let index = low.checked_sub(1)?;
        let at = self.entries.checked_add(index.checked_mul(ENTRY_SIZE)?)?;
        let raw: [u8; 6] = env.bytes(at, 6)?.try_into().ok()?;
        Some(decode(raw, self.version))
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn raw(sp: i16, bp: i16, low: u8, high: u8) -> [u8; 6] {
        let [s0, s1] = sp.to_le_bytes();
        let [b0, b1] = bp.to_le_bytes();
        [s0, s1, b0, b1, low, high]
    }

    #[test]
    fn version_1_entries() {
        // sp = SP + 16, bp = [prev_sp - 16], CALL.
        let call = decode(raw(16, -16, 0x15, 0x00), Version::V1);
        assert_eq!(
            call,
            Entry {
                sp_offset: 16,
                bp_offset: -16,
                sp_reg: REG_SP,
                bp_reg: REG_PREV_SP,
                kind: Kind::Call,
                signal: false
            }
        );
        let regs = decode(raw(0, 0, 0x05, 0x01), Version::V1);
        assert_eq!((regs.kind, regs.signal), (Kind::Regs, true));
        let partial = decode(raw(8, 0, 0x05, 0x02), Version::V1);
        assert_eq!((partial.kind, partial.signal), (Kind::RegsPartial, true));
        // sp_reg undefined: the end of the stack with `end`, else no data.
        assert_eq!(
            decode(raw(0, 0, 0, 0x04), Version::V1).kind,
            Kind::EndOfStack
        );
        assert_eq!(decode([0; 6], Version::V1).kind, Kind::Undefined);
        assert_eq!(
            decode(raw(0, 0, 0x05, 0x03), Version::V1).kind,
            Kind::Undefined
        );
    }

    #[test]
    fn version_2_entries() {
        // The signal bit is its own; `end` moved to bit 11.
        let call = decode(raw(8, 0, 0x05, 0x04), Version::V2);
        assert_eq!((call.kind, call.signal), (Kind::Call, true));
        let regs = decode(raw(0, 0, 0x05, 0x01), Version::V2);
        assert_eq!((regs.kind, regs.signal), (Kind::Regs, false));
        assert_eq!(
            decode(raw(0, 0, 0, 0x08), Version::V2).kind,
            Kind::EndOfStack
        );
        assert_eq!(
            decode(raw(0, 0, 0, 0x04), Version::V2).kind,
            Kind::Undefined
        );
    }

    #[test]
    fn version_3_entries() {
        let call = decode(raw(8, 0, 0x05, 0x02), Version::V3);
        assert_eq!(
            (call.kind, call.signal, call.sp_reg),
            (Kind::Call, false, REG_SP)
        );
        assert_eq!(
            decode(raw(0, 0, 0, 0x01), Version::V3).kind,
            Kind::EndOfStack
        );
        let regs = decode(raw(0, 0, 0x05, 0x0b), Version::V3);
        assert_eq!((regs.kind, regs.signal), (Kind::Regs, true));
        assert_eq!(
            decode(raw(0, 0, 0x05, 0x0c), Version::V3).kind,
            Kind::RegsPartial
        );
        assert_eq!(decode([0; 6], Version::V3).kind, Kind::Undefined);
        assert_eq!(
            decode(raw(0, 0, 0x05, 0x07), Version::V3).kind,
            Kind::Undefined
        );
        assert_eq!(decode(raw(-8, 0, 0x09, 0x02), Version::V3).sp_offset, -8);
    }
}
