//! VMCOREINFO: the `KEY=value` text the kernel publishes for dump tools.
//!
//! Each key family has its own base: `SYMBOL(...)`, `KERNELOFFSET` and `BUILD-ID` are hex
//! without `0x`; `NUMBER(...)` is signed decimal (or `0x` hex); `PAGESIZE`, `SIZE(...)`,
//! `OFFSET(...)` and `LENGTH(...)` are decimal.

use std::ops::Range;

/// The text as the kernel wrote it, its lines as (key, value) ranges in file order (order
/// matters for error reports), and (hash of key, line) pairs sorted for lookups. Open reads
/// VMCOREINFO from every dump: parsing allocates three times and sorts integers only.
#[derive(Debug, Clone, Default)]
pub struct VmcoreInfo {
    text: String,
    lines: Vec<(Range<usize>, Range<usize>)>,
    by_key: Vec<(u64, usize)>,
}

/// More text than any kernel writes (the kernel's buffer is one page); bounds hostile input.
pub const MAX_VMCOREINFO: usize = 1 << 20;
/// All sources together.
pub const MAX_VMCOREINFO_TOTAL: usize = 4 << 20;

/// A key's hash from its length and its first and last eight bytes: keys share prefixes
/// (`SYMBOL(`, `OFFSET(`) but rarely all three. Collisions cost a key comparison, never a
/// wrong answer, and a run of them is sorted by key (`index`), so crafted keys stay n log n.
fn key_hash(key: &str) -> u64 {
    let bytes = key.as_bytes();
    let word = |part: &[u8]| {
        let mut raw = [0u8; 8];
        raw.iter_mut().zip(part).for_each(|(d, s)| *d = *s);
        u64::from_le_bytes(raw)
    };
    let head = word(bytes);
    let tail = word(bytes.get(bytes.len().saturating_sub(8)..).unwrap_or(&[]));
    let mixed = (head ^ tail.rotate_left(29) ^ (bytes.len() as u64).rotate_left(53))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mixed ^ mixed >> 31
}

/// The text before the first NUL (the kernel's buffer is a page, zero-filled past the text).
fn before_nul(bytes: &[u8]) -> &[u8] {
    let end = memchr::memchr(0, bytes).unwrap_or(bytes.len());
    bytes.get(..end).unwrap_or(bytes)
}

/// Runs of one hash longer than this are sorted by key to find duplicates; shorter ones
/// (nearly always one line) are compared pairwise.
const SHORT_RUN: usize = 8;

impl VmcoreInfo {
    pub fn parse(text: &[u8]) -> VmcoreInfo {
        let text = before_nul(text);
        VmcoreInfo::index(String::from_utf8_lossy(text).into_owned())
    }

    /// The ranges of one line's key and value (`KEY=VALUE`, surrounding blanks trimmed),
    /// found at `at` in the text; None for a line with no `=` or an empty key.
    fn split_line(line: &[u8], at: usize) -> Option<(Range<usize>, Range<usize>)> {
        // Keys are a few dozen bytes: a plain loop beats memchr's setup.
        let eq = memchr::memchr(b'=', line)?;
        let key = trimmed_ascii(line, 0, eq, at)?;
        let value = trimmed_ascii(line, eq.checked_add(1)?, line.len(), at)?;
        (!key.is_empty()).then_some((key, value))
    }

    fn index(text: String) -> VmcoreInfo {
        let mut info = VmcoreInfo {
            text,
            lines: Vec::new(),
            by_key: Vec::new(),
        };
        // Byte offsets into the text (ASCII `\n`, `=` and blanks are char boundaries). One
        // scan for the newlines of the whole text: a call per line costs more than the line.
        let bytes = info.text.as_bytes();
        let mut start = 0usize;
        let ends = memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len()));
        for end in ends {
            if let Some(line) = bytes
                .get(start..end)
                .and_then(|line| VmcoreInfo::split_line(line, start))
            {
                info.lines.push(line);
            }
            start = end.saturating_add(1);
        }
        let mut by_key: Vec<(u64, usize)> = (0..info.lines.len())
            .map(|i| (key_hash(info.key(i)), i))
            .collect();
        by_key.sort_unstable();
        // A key written twice keeps its first value, as the kernel's readers do. Lines of
        // one key share a hash, so they lie in one run of equal hashes.
        let mut repeated: Vec<usize> = Vec::new();
        let mut run_start = 0usize;
        while let Some(&(hash, _)) = by_key.get(run_start) {
            let run_len = by_key
                .get(run_start..)
                .unwrap_or(&[])
                .iter()
                .take_while(|(h, _)| *h == hash)
                .count();
            let run_end = run_start.saturating_add(run_len.max(1));
            if let Some(run) = by_key.get_mut(run_start..run_end) {
                info.repeats_in(run, &mut repeated);
            }
            run_start = run_end;
        }
        if repeated.is_empty() {
            info.by_key = by_key;
            return info;
        }
        // Line numbers move where duplicates go: index again (rare: real files have none).
        repeated.sort_unstable();
        let mut line = 0usize;
        let mut drop = repeated.iter().peekable();
        info.lines.retain(|_| {
            let gone = drop.next_if_eq(&&line).is_some();
            line = line.saturating_add(1);
            !gone
        });
        info.by_key = (0..info.lines.len())
            .map(|i| (key_hash(info.key(i)), i))
            .collect();
        info.by_key.sort_unstable();
        info
    }

    /// Adds to `repeated` the lines of `run` (lines of one hash, in line order) whose key an
    /// earlier line of the run has.
    fn repeats_in(&self, run: &mut [(u64, usize)], repeated: &mut Vec<usize>) {
        if run.len() <= SHORT_RUN {
            for (i, &(_, line)) in run.iter().enumerate() {
                let key = self.key(line);
                let seen = run.get(..i).unwrap_or(&[]);
                if seen.iter().any(|&(_, earlier)| self.key(earlier) == key) {
                    repeated.push(line);
                }
            }
            return;
        }
        // Side by side by key, the first line first (n log n however the keys collide).
        run.sort_unstable_by(|a, b| self.key(a.1).cmp(self.key(b.1)).then(a.1.cmp(&b.1)));
        for pair in run.windows(2) {
            if let [(_, first), (_, next)] = pair {
                if self.key(*first) == self.key(*next) {
                    repeated.push(*next);
                }
            }
        }
        // The lookups' order: by line within the hash.
        run.sort_unstable();
    }

    fn key(&self, line: usize) -> &str {
        self.lines
            .get(line)
            .and_then(|(k, _)| self.text.get(k.clone()))
            .unwrap_or("")
    }

    fn value(&self, line: usize) -> &str {
        self.lines
            .get(line)
            .and_then(|(_, v)| self.text.get(v.clone()))
            .unwrap_or("")
    }

    /// The text as the dump carries it.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// VMCOREINFO from several sources (notes, the kdump sub-header): the first source's
    /// keys win; a source equal to an earlier one adds nothing; the text is indexed once
    /// and kept below `MAX_VMCOREINFO_TOTAL` (a file may hold any number of notes).
    pub fn parse_all<'a>(sources: impl IntoIterator<Item = &'a [u8]>) -> VmcoreInfo {
        let mut seen: Vec<&[u8]> = Vec::new();
        let mut text = Vec::new();
        for source in sources {
            let source = before_nul(source);
            if text.len().saturating_add(source.len()) > MAX_VMCOREINFO_TOTAL {
                break;
            }
            if source.is_empty() || seen.contains(&source) {
                continue;
            }
            seen.push(source);
            if !text.is_empty() && !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            text.extend_from_slice(source);
        }
        // Real VMCOREINFO is ASCII: no copy then; anything else is decoded with U+FFFD.
        let text = String::from_utf8(text)
            .unwrap_or_else(|bad| String::from_utf8_lossy(bad.as_bytes()).into_owned());
        VmcoreInfo::index(text)
    }

    /// `(key, value)` in the order the kernel wrote them.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.lines.len()).map(|i| (self.key(i), self.value(i)))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let hash = key_hash(key);
        let start = self.by_key.partition_point(|&(h, _)| h < hash);
        let mut same = self
            .by_key
            .get(start..)?
            .iter()
            .take_while(|(h, _)| *h == hash);
        let &(_, line) = same.find(|&&(_, line)| self.key(line) == key)?;
        Some(self.value(line))
    }

    pub fn osrelease(&self) -> Option<&str> {
        self.get("OSRELEASE")
    }

    pub fn build_id(&self) -> Option<&str> {
        self.get("BUILD-ID")
    }

    pub fn page_size(&self) -> Option<u64> {
        self.get("PAGESIZE")?.parse().ok()
    }

    pub fn kernel_offset(&self) -> Option<u64> {
        parse_hex(self.get("KERNELOFFSET")?)
    }

    pub fn symbol(&self, name: &str) -> Option<u64> {
        parse_hex(self.get(&format!("SYMBOL({name})"))?)
    }

    pub fn number(&self, name: &str) -> Option<i64> {
        parse_number(self.get(&format!("NUMBER({name})"))?)
    }

    /// `SYMBOL(name)` lines with their values, in file order.
    pub fn symbols(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries().filter_map(|(key, value)| {
            let name = key.strip_prefix("SYMBOL(")?.strip_suffix(')')?;
            Some((name, parse_hex(value)?))
        })
    }
}

/// `line[from..to]` without surrounding ASCII blanks, as a range of the text the line
/// starts at `at` in.
fn trimmed_ascii(line: &[u8], from: usize, to: usize, at: usize) -> Option<Range<usize>> {
    let part = line.get(from..to)?;
    let start = part.iter().position(|b| !b.is_ascii_whitespace());
    let (start, end) = match start {
        Some(start) => {
            let end = part.iter().rposition(|b| !b.is_ascii_whitespace())?;
            (start, end.checked_add(1)?)
        }
        None => (0, 0),
    };
    let base = at.checked_add(from)?;
    Some(base.checked_add(start)?..base.checked_add(end)?)
}

pub fn parse_hex(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16).ok()
}

/// NUMBER() values: signed decimal as the kernel prints `%ld`, or `0x` hex.
pub fn parse_number(text: &str) -> Option<i64> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let magnitude = match body.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()? as i64,
        None => body.parse::<i64>().ok()?,
    };
    Some(if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_per_key_family() {
        let info = VmcoreInfo::parse(
            b"OSRELEASE=6.1.0\nPAGESIZE=4096\nKERNELOFFSET=27400000\n\
              SYMBOL(_stext)=ffffffffa8400000\nNUMBER(phys_base)=-511705088\n\
              NUMBER(sme_mask)=0x10\n\0garbage",
        );
        assert_eq!(info.osrelease(), Some("6.1.0"));
        assert_eq!(info.page_size(), Some(4096));
        assert_eq!(info.kernel_offset(), Some(0x2740_0000));
        assert_eq!(info.symbol("_stext"), Some(0xffff_ffff_a840_0000));
        assert_eq!(info.number("phys_base"), Some(-511_705_088));
        assert_eq!(info.number("sme_mask"), Some(16));
        assert_eq!(info.entries().count(), 6);
        assert_eq!(VmcoreInfo::parse(b"K=1\nK=2\n").get("K"), Some("1"));
    }

    #[test]
    fn sources_merge_with_the_first_winning() {
        let a = VmcoreInfo::parse_all([&b"A=1\n"[..], b"A=2\nB=3\n", b"A=1\n"]);
        assert_eq!(a.get("A"), Some("1"));
        assert_eq!(a.get("B"), Some("3"));
        assert_eq!(a.entries().count(), 2);
    }

    #[test]
    fn a_run_of_one_hash_finds_its_repeats_either_way() {
        // Twenty lines as if their keys all hashed alike: the long-run path (sorted by
        // key) and the short one (pairwise) both find the later lines of a key.
        let text: String = (0..20).map(|i| format!("K{}={i}\n", i % 7)).collect();
        let info = VmcoreInfo::parse(text.as_bytes());
        assert_eq!(info.entries().count(), 7);
        assert_eq!(info.get("K3"), Some("3"));
        // The same text with every line kept (no index, so no line dropped yet).
        let mut info = VmcoreInfo {
            text: text.clone(),
            ..VmcoreInfo::default()
        };
        let mut at = 0;
        for line in text.split_inclusive('\n') {
            let body = line.trim_end_matches('\n').as_bytes();
            info.lines.push(VmcoreInfo::split_line(body, at).unwrap());
            at += line.len();
        }
        let mut all: Vec<(u64, usize)> = (0..20).map(|i| (0, i)).collect();
        let mut long = Vec::new();
        info.repeats_in(&mut all, &mut long);
        long.sort_unstable();
        assert_eq!(long, (7..20).collect::<Vec<_>>());
        let mut short = Vec::new();
        info.repeats_in(&mut all[..8], &mut short);
        assert_eq!(short, vec![7]);
    }

    #[test]
    fn many_repeated_keys_index_fast() {
        let text = "K=1\n".repeat(250_000);
        let info = VmcoreInfo::parse(text.as_bytes());
        assert_eq!((info.get("K"), info.entries().count()), (Some("1"), 1));
    }
}
