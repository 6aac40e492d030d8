//! The system facts a triage report starts with, decoded as the kernel itself prints them:
//! the load average (`/proc/loadavg`), the taint flags (`print_tainted`), the uptime
//! (`ktime_get_coarse_boottime`), the CPU masks. Pure functions over bytes already read;
//! the session reads them.

use crate::btf::Btf;

use super::Words;

/// `FSHIFT`: avenrun is fixed-point with 11 fractional bits.
const FSHIFT: u32 = 11;
/// `FIXED_1`.
const FIXED_1: u64 = 1 << FSHIFT;

/// The 1/5/15-minute load averages as `/proc/loadavg` prints them (fs/proc/loadavg.c:
/// `get_avenrun(avnrun, FIXED_1/200, 0)`, then `LOAD_INT(x).LOAD_FRAC(x)` with
/// `LOAD_FRAC(x) = LOAD_INT((x & (FIXED_1-1)) * 100)`).
pub fn loadavg(avenrun: [u64; 3]) -> [String; 3] {
    avenrun.map(|raw| {
        let x = raw.saturating_add(FIXED_1 / 200);
        let int = x >> FSHIFT;
        let frac = ((x & (FIXED_1 - 1)).saturating_mul(100)) >> FSHIFT;
        format!("{int}.{frac:02}")
    })
}

/// The letters of `taint_flags[]` (kernel/panic.c) in bit order, for a kernel whose table
/// cannot be read: `(c_true, c_false)`, the 18 flags every kernel from 4.15 to 5.x has.
pub const TAINT_LETTERS: [(u8, u8); 18] = [
    (b'P', b'G'),
    (b'F', b' '),
    (b'S', b' '),
    (b'R', b' '),
    (b'M', b' '),
    (b'B', b' '),
    (b'U', b' '),
    (b'D', b' '),
    (b'A', b' '),
    (b'W', b' '),
    (b'C', b' '),
    (b'I', b' '),
    (b'O', b' '),
    (b'E', b' '),
    (b'L', b' '),
    (b'K', b' '),
    (b'X', b' '),
    (b'T', b' '),
];

/// The most flags a `taint_flags[]` read from memory may hold (`tainted_mask` is a long).
pub const MAX_TAINT_FLAGS: usize = 64;

/// Whether `(c_true, c_false)` is a `struct taint_flag` as every kernel writes one: an
/// upper-case letter, and a space or `G` (the table ends where this stops holding).
pub fn is_taint_flag(c_true: u8, c_false: u8) -> bool {
    c_true.is_ascii_uppercase() && matches!(c_false, b' ' | b'G')
}

/// `print_tainted()`: "Not tainted", or "Tainted: " and one letter per flag of the table
/// (c_true where the bit is set, c_false where not). Bits past the table print nothing,
/// as in the kernel.
pub fn taint_string(mask: u64, flags: &[(u8, u8)]) -> String {
    if mask == 0 {
        return "Not tainted".to_owned();
    }
    let letters: String = flags
        .iter()
        .enumerate()
        .map(|(bit, &(on, off))| {
            let set = u32::try_from(bit)
                .ok()
                .and_then(|bit| 1u64.checked_shl(bit))
                .is_some_and(|b| mask & b != 0);
            char::from(if set { on } else { off })
        })
        .collect();
    format!("Tainted: {letters}")
}

/// The CPUs whose bits are set in a `struct cpumask`'s longs, below `nbits`.
pub fn cpus(raw: &[u8], words: Words, nbits: u32) -> Vec<u32> {
    let bits = u32::try_from(words.long_bytes().saturating_mul(8))
        .ok()
        .filter(|&b| b > 0)
        .unwrap_or(64);
    (0..nbits)
        .filter(|&cpu| {
            let (index, bit) = (cpu.checked_div(bits), cpu.checked_rem(bits));
            let (Some(index), Some(bit)) = (index, bit) else {
                return false;
            };
            let word = u64::from(index).saturating_mul(words.long_bytes());
            words
                .long(raw, word)
                .checked_shr(bit)
                .is_some_and(|l| l & 1 == 1)
        })
        .collect()
}

/// Where the coarse boot time lies in `tk_core` (kernel/time/timekeeping.c's
/// `ktime_get_coarse_with_offset(TK_OFFS_BOOT)`): `tkr_mono.base + offs_boot` plus the
/// nanoseconds (`coarse_nsec` since 6.15, else `tkr_mono.xtime_nsec >> tkr_mono.shift`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLayout {
    /// Offsets from `tk_core` (the timekeeper's offset inside it included).
    pub base: u64,
    pub offs_boot: u64,
    pub nsec: Nsec,
    /// Bytes of `tk_core` read (covers every field).
    pub span: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nsec {
    Coarse(u64),
    Shifted { xtime_nsec: u64, shift: u64 },
}

impl TimeLayout {
    /// The layout, or the first thing BTF lacks. `tk_core` is an anonymous struct
    /// `{ seq; timekeeper; }` before 6.13 and `struct tk_data` since.
    pub fn from_btf(btf: &Btf) -> Result<TimeLayout, String> {
        let core = btf
            .find_struct_with("tk_data", &["timekeeper"])
            .or_else(|| btf.find_struct_with("", &["seq", "timekeeper"]))
            .ok_or_else(|| "tk_core's type (struct tk_data)".to_owned())?;
        let at = |path: &str| {
            btf.offset_of(core, &format!("timekeeper.{path}"))
                .map(|(offset, _)| offset)
                .ok_or_else(|| format!("timekeeper.{path}"))
        };
        let base = at("tkr_mono.base")?;
        let offs_boot = at("offs_boot")?;
        let nsec = match at("coarse_nsec") {
            Ok(coarse) => Nsec::Coarse(coarse),
            Err(_) => Nsec::Shifted {
                xtime_nsec: at("tkr_mono.xtime_nsec")?,
                shift: at("tkr_mono.shift")?,
            },
        };
        let end = match nsec {
            Nsec::Coarse(at) => at.saturating_add(8),
            Nsec::Shifted { xtime_nsec, shift } => {
                xtime_nsec.saturating_add(8).max(shift.saturating_add(4))
            }
        };
        let span = end
            .max(base.saturating_add(8))
            .max(offs_boot.saturating_add(8));
        if span > 4096 {
            return Err(format!("a timekeeper of {span} bytes"));
        }
        Ok(TimeLayout {
            base,
            offs_boot,
            nsec,
            span,
        })
    }

    /// Nanoseconds since boot, from `span` bytes of `tk_core`; None where the sum does
    /// not fit (a corrupt timekeeper).
    pub fn boottime_ns(&self, raw: &[u8], words: Words) -> Option<u64> {
        let signed = |at: u64| i64::from_ne_bytes(words.u64(raw, at).to_ne_bytes());
        let nsec = match self.nsec {
            Nsec::Coarse(at) => words.u64(raw, at),
            Nsec::Shifted { xtime_nsec, shift } => words
                .u64(raw, xtime_nsec)
                .checked_shr(words.u32(raw, shift))
                .unwrap_or(0),
        };
        let total = signed(self.base)
            .checked_add(signed(self.offs_boot))?
            .checked_add(i64::try_from(nsec).ok()?)?;
        u64::try_from(total).ok()
    }
}

/// `HZ` from `tick_nsec` (`NSEC_PER_SEC / HZ`, give or take NTP's adjustment): the
/// nearest of the values kernels are built with.
pub fn hz_from_tick_nsec(tick_nsec: u64) -> Option<u64> {
    const HZ: [u64; 6] = [100, 250, 300, 1000, 24, 1024];
    HZ.into_iter().find(|&hz| {
        let nominal = 1_000_000_000u64.checked_div(hz).unwrap_or(0);
        tick_nsec.abs_diff(nominal) <= nominal.checked_div(100).unwrap_or(0)
    })
}

/// Seconds since boot from the tick count (crash's `sys`): `(jiffies_64 - INITIAL_JIFFIES)
/// / HZ`, with `INITIAL_JIFFIES = (unsigned int)(-300 * HZ)`.
pub fn jiffies_uptime_ns(jiffies_64: u64, hz: u64) -> Option<u64> {
    let initial = u64::from(0u32.wrapping_sub(u32::try_from(hz.checked_mul(300)?).ok()?));
    let ticks = jiffies_64.wrapping_sub(initial);
    u64::try_from(
        u128::from(ticks)
            .checked_mul(1_000_000_000)?
            .checked_div(u128::from(hz))?,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn loadavg_as_proc_prints_it() {
        assert_eq!(loadavg([0, 0, 0]), ["0.00", "0.00", "0.00"]);
        assert_eq!(loadavg([164, 34, 11]), ["0.08", "0.02", "0.01"]);
        assert_eq!(loadavg([1148, 238, 77]), ["0.56", "0.12", "0.04"]);
        assert_eq!(loadavg([2048 * 3 + 1024, 0, u64::MAX])[0], "3.50");
    }

    #[test]
    fn taint_letters_as_print_tainted() {
        assert_eq!(taint_string(0, &TAINT_LETTERS), "Not tainted");
        // W (9) and O (12): "G" for the proprietary flag's absence, spaces elsewhere.
        assert_eq!(
            taint_string(1 << 9 | 1 << 12, &TAINT_LETTERS),
            "Tainted: G        W  O     "
        );
        assert_eq!(taint_string(1, &TAINT_LETTERS[..2]), "Tainted: P ");
        assert_eq!(taint_string(1 << 63, &TAINT_LETTERS[..1]), "Tainted: G");
        assert!(is_taint_flag(b'P', b'G') && !is_taint_flag(b'p', b' '));
    }

    #[test]
    fn cpu_masks() {
        let words = Words {
            big_endian: false,
            wide: true,
        };
        let mut raw = 0b1011u64.to_le_bytes().to_vec();
        raw.extend_from_slice(&1u64.to_le_bytes());
        assert_eq!(cpus(&raw, words, 2), [0, 1]);
        assert_eq!(cpus(&raw, words, 65), [0, 1, 3, 64]);
        assert_eq!(cpus(&raw[..4], words, 65), Vec::<u32>::new());
    }

    #[test]
    fn jiffies_and_hz() {
        assert_eq!(hz_from_tick_nsec(4_000_000), Some(250));
        assert_eq!(hz_from_tick_nsec(3_999_910), Some(250));
        assert_eq!(hz_from_tick_nsec(7), None);
        // The corpus's boot-kaslr: 2.684 s by crash's count.
        assert_eq!(jiffies_uptime_ns(4_294_892_967, 250), Some(2_684_000_000));
        assert_eq!(jiffies_uptime_ns(0, 0), None);
    }
}
