//! Text symbol tables in the `nm` form, `ADDRESS TYPE NAME` with an optional
//! `\t[module]` column: /proc/kallsyms (runtime addresses) and System.map (link-time).

use super::{ExecFormat, Symbol};
use crate::errors::SymbolFault;

/// How many leading lines must parse for the file to count as a symbol table.
const PROBE_LINES: usize = 16;

/// One parsed line: address, type letter, where the name starts in the line, and the name.
fn parse_line(line: &[u8]) -> Option<(u64, u8, usize, &[u8])> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let space = memchr::memchr(b' ', line)?;
    let digits = line.get(..space)?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let addr = parse_hex(digits)?;
    // ` T ` then the name: `space` is within the line, so this does not overflow.
    let name_start = space.checked_add(3)?;
    let &[_, letter, b' '] = line.get(space..name_start)? else {
        return None;
    };
    if !(letter.is_ascii_alphabetic() || letter == b'?') {
        return None;
    }
    let rest = line.get(name_start..)?;
    let name_len = rest
        .iter()
        .position(|&b| b == b'\t' || b == b' ')
        .unwrap_or(rest.len());
    if name_len == 0 {
        return None;
    }
    if let Some(tail) = rest.get(name_len..).filter(|t| !t.is_empty()) {
        let module = tail.trim_ascii();
        if !(module.starts_with(b"[") && module.ends_with(b"]")) {
            return None;
        }
    }
    Some((addr, letter, name_start, rest.get(..name_len)?))
}

/// Hex digits to a number (at most 16 digits: no overflow).
fn parse_hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |value, &c| {
        let digit = match c {
            b'0'..=b'9' => c.wrapping_sub(b'0'),
            b'a'..=b'f' => c.wrapping_sub(b'a' - 10),
            b'A'..=b'F' => c.wrapping_sub(b'A' - 10),
            _ => return None,
        };
        Some(value << 4 | u64::from(digit))
    })
}

fn lines(data: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
            let start = pos;
            // The line, and where the next one starts (past its newline: within the data).
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(n) => (rest.get(..n)?, start.checked_add(n)?.checked_add(1)?),
                None => (rest, data.len()),
            };
            pos = next;
            if !line.trim_ascii().is_empty() {
                return Some((start, line));
            }
        }
        None
    })
}

/// Decides whether `data` is kallsyms or System.map text, or neither.
pub fn detect(data: &[u8], from_procfs: bool) -> Result<ExecFormat, SymbolFault> {
    let mut probed = false;
    for (_, line) in lines(data).take(PROBE_LINES) {
        parse_line(line).ok_or(SymbolFault::Unrecognized)?;
        probed = true;
    }
    if !probed {
        return Err(SymbolFault::Unrecognized);
    }
    let any_address = lines(data)
        .filter_map(|(_, l)| parse_line(l))
        .any(|(addr, ..)| addr != 0);
    if !any_address {
        return Err(SymbolFault::HiddenAddresses);
    }
    // Only kallsyms lists module symbols; a copy of /proc/kallsyms without modules loaded
    // reads like System.map and is taken as one unless it comes from procfs itself.
    if from_procfs || memchr::memmem::find(data, b"\t[").is_some() {
        Ok(ExecFormat::Kallsyms)
    } else {
        Ok(ExecFormat::SystemMap)
    }
}

pub fn for_each(data: &[u8], visit: &mut impl FnMut(&[u8], usize, Symbol)) {
    for (start, line) in lines(data) {
        if let Some((value, letter, name_at, name)) = parse_line(line) {
            // The name lies in the data: its position does not overflow.
            if let Some(at) = start.checked_add(name_at) {
                visit(name, at, Symbol { value, letter });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_content() {
        let map = b"0000000000000000 D __per_cpu_start\nffffffff81000000 T _stext\n";
        assert_eq!(detect(map, false), Ok(ExecFormat::SystemMap));
        let ksyms = b"ffffffff81000000 T _stext\nffffffffc0201000 t f\t[mod]\n";
        assert_eq!(detect(ksyms, false), Ok(ExecFormat::Kallsyms));
        assert_eq!(
            detect(b"0000000000000000 T _stext\n", false),
            Err(SymbolFault::HiddenAddresses)
        );
        assert_eq!(
            detect(b"this is a text file", false),
            Err(SymbolFault::Unrecognized)
        );
        assert_eq!(detect(b"\n\n", false), Err(SymbolFault::Unrecognized));
    }

    #[test]
    fn names_point_into_the_data() {
        let data = b"ffffffff81000000 T _stext\nffffffff82000000 d x\t[m]\n";
        let mut seen = Vec::new();
        for_each(data, &mut |name, at, sym| {
            assert_eq!(&data[at..at + name.len()], name);
            seen.push((name.to_vec(), sym.value, sym.letter));
        });
        assert_eq!(
            seen,
            vec![
                (b"_stext".to_vec(), 0xffffffff81000000, b'T'),
                (b"x".to_vec(), 0xffffffff82000000, b'd')
            ]
        );
    }
}
