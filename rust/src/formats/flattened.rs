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
const RECORD_HEADER: u64 = 16;

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
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The inner (re-assembled) file, served from the flattened one.
pub struct Flattened {
    outer: Arc<dyn Medium>,
    pieces: Vec<Piece>,
    size: u64,
}

fn be64(raw: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(raw.get(at..at + 8)?.try_into().ok()?))
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
            let mut raw = [0u8; RECORD_HEADER as usize];
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
            let data = pos + RECORD_HEADER;
            if data.checked_add(size).is_none_or(|end| end > file_size) {
                return Err(CoreFault::Truncated(format!(
                    "flattened record at {pos:#x} runs past the end of the file"
                )));
            }
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
            pos = data + size;
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
            if old.start < new.start {
                let len = new.start - old.start;
                map.insert(old.start, Piece { len, ..old });
            }
            if old.end() > new.end() {
                let cut = new.end() - old.start;
                map.insert(
                    new.end(),
                    Piece {
                        start: new.end(),
                        len: old.len - cut,
                        source: old.source + cut,
                    },
                );
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
        if let Some(first) = self.piece_at(offset) {
            let within = offset - first.start;
            if first.len - within >= len as u64 {
                return self.outer.bytes_at(first.source + within, len);
            }
        }
        // The range spans records, or holes no record covers: those read as zeros, as in
        // the file `makedumpfile -R` rebuilds (it seeks over them). A record's offset is
        // the stream's claim, so one copy is bounded by the stream's real size too.
        let wanted = (len as u64)
            .min(self.size.saturating_sub(offset))
            .min(self.outer.size());
        let mut out = Vec::with_capacity(wanted as usize);
        let mut at = offset;
        while (out.len() as u64) < wanted {
            let left = wanted - out.len() as u64;
            match self.piece_at(at) {
                Some(piece) => {
                    let within = at - piece.start;
                    let take = (piece.len - within).min(left) as usize;
                    let bytes = self.outer.bytes_at(piece.source + within, take)?;
                    let short = bytes.len() < take;
                    out.extend_from_slice(&bytes);
                    at += bytes.len() as u64;
                    if short {
                        break;
                    }
                }
                None => {
                    let next = self
                        .pieces
                        .get(self.pieces.partition_point(|p| p.start <= at));
                    let hole = next.map_or(left, |p| (p.start - at).min(left));
                    out.resize(out.len() + hole as usize, 0);
                    at += hole;
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
