//! makedumpfile's flattened format (`makedumpfile -F`, QEMU `dump-guest-memory -z`): the
//! dump written to a pipe as records `{be64 offset, be64 size, data}` after a 4 KiB header,
//! ended by a record of offset -1 and size -1. The record headers are walked once at open
//! into a sorted index; the inner dump is then read through that index, never copied.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use crate::errors::CoreFault;
use crate::mapping::Medium;

const SIGNATURE: &[u8] = b"makedumpfile\0\0\0\0";
const HEADER_SIZE: u64 = 4096;
const RECORD_HEADER_LEN: usize = 16;
const RECORD_HEADER: u64 = RECORD_HEADER_LEN as u64;

/// `n`, at most `bound`: a length of the inner file clamped to a buffer's.
fn clamp(n: u64, bound: usize) -> usize {
    usize::try_from(n).map_or(bound, |n| n.min(bound))
}

pub fn has_signature(head: &[u8]) -> bool {
    head.starts_with(SIGNATURE)
}

/// A piece of the inner file: `len` bytes at inner offset `start`, stored at `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    start: u64,
    len: u64,
    source: u64,
}

impl Piece {
    /// The exclusive end: a bound, clamped to the address space (index keeps only records
    /// whose offset + size fits, and every piece is a part of one).
    fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// Where inner offset `at` (in this piece) is stored, and how many bytes of the piece
    /// are left from there.
    fn locate(&self, at: u64) -> Option<(u64, u64)> {
        let within = at.checked_sub(self.start)?;
        let left = self.len.checked_sub(within).filter(|&n| n > 0)?;
        Some((self.source.checked_add(within)?, left))
    }
}

/// The inner (re-assembled) file, served from the flattened one.
pub struct Flattened {
    outer: Arc<dyn Medium>,
    pieces: Vec<Piece>,
    size: u64,
}

fn be64(raw: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(
        raw.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

impl Flattened {
    pub fn index(outer: Arc<dyn Medium>) -> Result<Flattened, CoreFault> {
        let file_size = outer.size();
        let header = outer
            .exact_at(0, 32)
            .ok()
            .flatten()
            .ok_or_else(|| CoreFault::Truncated("flattened header".into()))?;
        let (Some(kind), Some(version)) = (be64(&header, 16), be64(&header, 24)) else {
            return Err(CoreFault::Truncated("flattened header".into()));
        };
        if kind != 1 {
            return Err(CoreFault::Invalid(format!("flattened header type {kind}")));
        }
        if version != 1 {
            return Err(CoreFault::Invalid(format!(
                "flattened header version {version}"
            )));
        }
        let mut pieces = Vec::new();
        let mut pos = HEADER_SIZE;
        loop {
            let mut raw = [0u8; RECORD_HEADER_LEN];
            if outer.copy_at(pos, &mut raw).ok() != Some(raw.len()) {
                return Err(CoreFault::Truncated(format!(
                    "flattened stream ends at {pos:#x} without its end marker"
                )));
            }
            let (Some(offset), Some(size)) = (be64(&raw, 0), be64(&raw, 8)) else {
                return Err(CoreFault::Truncated("flattened record header".into()));
            };
            if offset == -1 && size == -1 {
                break;
            }
            if offset < 0 || size < 0 {
                return Err(CoreFault::Invalid(format!(
                    "flattened record at {pos:#x}: offset {offset}, size {size}"
                )));
            }
            let (offset, size) = (offset as u64, size as u64);
            let Some((data, end)) = pos
                .checked_add(RECORD_HEADER)
                .and_then(|data| Some((data, data.checked_add(size)?)))
                .filter(|&(_, end)| end <= file_size)
            else {
                return Err(CoreFault::Truncated(format!(
                    "flattened record at {pos:#x} runs past the end of the file"
                )));
            };
            if offset.checked_add(size).is_none() {
                return Err(CoreFault::Invalid(format!(
                    "flattened record at {pos:#x}: offset {offset}"
                )));
            }
            if size > 0 {
                pieces.push(Piece {
                    start: offset,
                    len: size,
                    source: data,
                });
            }
            pos = end;
        }
        let pieces = resolve_overlaps(pieces);
        let size = pieces.last().map_or(0, Piece::end);
        Ok(Flattened {
            outer,
            pieces,
            size,
        })
    }

    /// The piece holding inner offset `at`, if any.
    fn piece_at(&self, at: u64) -> Option<&Piece> {
        let index = self
            .pieces
            .partition_point(|p| p.start <= at)
            .checked_sub(1)?;
        self.pieces.get(index).filter(|p| at < p.end())
    }
}

/// Sorts the records by inner offset; where they overlap, the later write wins, as when
/// makedumpfile -R replays the stream into a file.
fn resolve_overlaps(mut pieces: Vec<Piece>) -> Vec<Piece> {
    let mut sorted = pieces.clone();
    sorted.sort_by_key(|p| p.start);
    if sorted
        .windows(2)
        .all(|w| matches!(w, [a, b] if a.end() <= b.start))
    {
        return sorted;
    }
    let mut map: BTreeMap<u64, Piece> = BTreeMap::new();
    for new in pieces.drain(..) {
        let overlapping: Vec<Piece> = map
            .range(..new.end())
            .rev()
            .take_while(|(_, p)| p.end() > new.start)
            .map(|(_, p)| *p)
            .collect();
        for old in overlapping {
            map.remove(&old.start);
            // The part of `old` before `new`, if any.
            if let Some(len) = new.start.checked_sub(old.start).filter(|&n| n > 0) {
                map.insert(old.start, Piece { len, ..old });
            }
            // The part of `old` after `new`, if any: `old` starts before new.end() (the
            // range above), so the cut is within it.
            if old.end() > new.end() {
                let rest = new.end().checked_sub(old.start).and_then(|cut| {
                    Some(Piece {
                        start: new.end(),
                        len: old.len.checked_sub(cut)?,
                        source: old.source.checked_add(cut)?,
                    })
                });
                if let Some(rest) = rest {
                    map.insert(rest.start, rest);
                }
            }
        }
        map.insert(new.start, new);
    }
    map.into_values().collect()
}

impl Medium for Flattened {
    fn size(&self) -> u64 {
        self.size
    }

    fn bytes_at(&self, offset: u64, len: usize) -> io::Result<Cow<'_, [u8]>> {
        let piece_of = |at: u64| self.piece_at(at).and_then(|p| p.locate(at));
        if let Some((source, left)) = piece_of(offset) {
            if left >= len as u64 {
                return self.outer.bytes_at(source, len);
            }
        }
        // The range spans records, or holes no record covers: those read as zeros, as in
        // the file `makedumpfile -R` rebuilds (it seeks over them). A record's offset is
        // the stream's claim, so one copy is bounded by the stream's real size too.
        let wanted = clamp(self.size.saturating_sub(offset).min(self.outer.size()), len);
        let mut out = Vec::with_capacity(wanted);
        // Every step adds at least one byte; `at` is offset + out.len(), below self.size.
        while let Some(left) = wanted.checked_sub(out.len()).filter(|&n| n > 0) {
            let Some(at) = offset.checked_add(out.len() as u64) else {
                break;
            };
            match piece_of(at) {
                Some((source, in_piece)) => {
                    let take = clamp(in_piece, left);
                    let bytes = self.outer.bytes_at(source, take)?;
                    let short = bytes.len() < take;
                    out.extend_from_slice(&bytes);
                    if short {
                        break;
                    }
                }
                None => {
                    let next = self
                        .pieces
                        .get(self.pieces.partition_point(|p| p.start <= at));
                    let hole = next
                        .and_then(|p| p.start.checked_sub(at))
                        .map_or(left, |gap| clamp(gap, left));
                    let Some(filled) = out.len().checked_add(hole) else {
                        break;
                    };
                    out.resize(filled, 0);
                }
            }
        }
        Ok(Cow::Owned(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_records_win() {
        let pieces = vec![
            Piece {
                start: 0,
                len: 100,
                source: 1000,
            },
            Piece {
                start: 50,
                len: 10,
                source: 2000,
            },
        ];
        let resolved = resolve_overlaps(pieces);
        assert_eq!(
            resolved,
            vec![
                Piece {
                    start: 0,
                    len: 50,
                    source: 1000
                },
                Piece {
                    start: 50,
                    len: 10,
                    source: 2000
                },
                Piece {
                    start: 60,
                    len: 40,
                    source: 1060
                },
            ]
        );
    }
}
