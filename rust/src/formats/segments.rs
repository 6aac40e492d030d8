//! A sorted, non-overlapping interval index over PT_LOAD segments, built once at open:
//! address → file bytes in O(log n), however many segments there are (a QEMU paging dump
//! has 65,000). Where segments overlap (a physical page mapped at several virtual addresses
//! in a paging dump), the first segment to cover an address keeps it: the bytes are the same.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Gap, Stop};
use crate::mapping::Medium;

/// One PT_LOAD as its program header states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub paddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub start: u64,
    /// Exclusive end of the memory range (p_memsz).
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// Bytes from `start` that the file holds (p_filesz); the rest of the range reads as zeros.
    pub file_len: u64,
}

impl Piece {
    /// Copies the bytes at `addr` (in this piece) into `buf`, up to the piece's end; past
    /// p_filesz the memory reads as zeros, past the end of the file it is truncated.
    pub fn copy(&self, medium: &dyn Medium, addr: u64, buf: &mut [u8]) -> Result<usize, Stop> {
        let within = addr.saturating_sub(self.start);
        let take = clamp(self.end.saturating_sub(addr), buf.len());
        let (head, _) = buf.split_at_mut(take);
        let in_file = clamp(self.file_len.saturating_sub(within), take);
        let (file_part, zero_part) = head.split_at_mut(in_file);
        if in_file > 0 {
            let bytes = medium
                .bytes_at(self.offset.saturating_add(within), in_file)
                .map_err(|_| (0, Gap::Truncated))?;
            let got = bytes.len();
            file_part
                .get_mut(..got)
                .unwrap_or(&mut [])
                .copy_from_slice(&bytes);
            if got < in_file {
                return Err((got, Gap::Truncated));
            }
        }
        zero_part.fill(0);
        Ok(take)
    }

    /// The file offset of `addr` and how many of `want` bytes the file holds from there.
    pub fn file_extent(&self, addr: u64, want: usize) -> Option<(u64, usize)> {
        let within = addr.checked_sub(self.start)?;
        let n = clamp(self.file_len.saturating_sub(within), want);
        (n > 0).then(|| (self.offset.saturating_add(within), n))
    }
}

/// `n`, at most `bound`: a byte count of the file clamped to a buffer's length.
#[inline]
fn clamp(n: u64, bound: usize) -> usize {
    usize::try_from(n).map_or(bound, |n| n.min(bound))
}

#[derive(Debug, Default)]
pub struct SegmentIndex {
    pieces: Vec<Piece>,
    /// The piece the last lookup found: reads come in runs over one structure, and a
    /// repeated hit skips the binary search (16 steps over a paging dump's 65,000 pieces).
    last_hit: AtomicUsize,
}

impl SegmentIndex {
    /// Indexes `segments` by the address `key` gives (None: the segment has no such address).
    pub fn build(segments: &[Segment], key: impl Fn(&Segment) -> Option<u64>) -> SegmentIndex {
        let mut keyed: Vec<(u64, u32)> = segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.memsz > 0)
            .filter_map(|(i, s)| Some((key(s)?, u32::try_from(i).ok()?)))
            .collect();
        sort_by_regions(&mut keyed);
        let mut pieces = Vec::with_capacity(keyed.len());
        let mut covered = 0u64;
        let mut any = false;
        for (start, index) in keyed {
            let Some(seg) = segments.get(index as usize) else {
                continue;
            };
            let end = start.saturating_add(seg.memsz);
            let from = if any { start.max(covered) } else { start };
            if from >= end {
                continue;
            }
            // What an earlier piece covers already (from >= start: nothing saturates).
            let skip = from.saturating_sub(start);
            pieces.push(Piece {
                start: from,
                end,
                offset: seg.offset.saturating_add(skip),
                file_len: seg.filesz.saturating_sub(skip),
            });
            covered = end;
            any = true;
        }
        SegmentIndex {
            pieces,
            last_hit: AtomicUsize::new(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn find(&self, addr: u64) -> Option<&Piece> {
        let hint = self.last_hit.load(Ordering::Relaxed);
        if let Some(piece) = self
            .pieces
            .get(hint)
            .filter(|p| p.start <= addr && addr < p.end)
        {
            return Some(piece);
        }
        let at = self
            .pieces
            .partition_point(|p| p.start <= addr)
            .checked_sub(1)?;
        let piece = self.pieces.get(at).filter(|p| addr < p.end)?;
        self.last_hit.store(at, Ordering::Relaxed);
        Some(piece)
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }
}

/// Sorts (address, segment) pairs. Producers write segments in some address order: a QEMU
/// paging dump in physical order, which leaves each kernel region (direct map, vmalloc,
/// fixmap, ...) in order, ascending or descending, but the regions interleaved. Split by
/// region, each is then in order already or reversed; only what is neither gets sorted.
fn sort_by_regions(keyed: &mut Vec<(u64, u32)>) {
    if keyed.is_sorted() {
        return;
    }
    const REGION_SHIFT: u32 = 39; // 512 GiB: the span of one top-level page-table entry
    let mut regions: Vec<u64> = Vec::new();
    for &(addr, _) in keyed.iter() {
        let region = addr >> REGION_SHIFT;
        if regions.last() != Some(&region) && !regions.contains(&region) {
            regions.push(region);
            if regions.len() > 64 {
                keyed.sort_unstable();
                return;
            }
        }
    }
    regions.sort_unstable();
    let mut groups: Vec<Vec<(u64, u32)>> = vec![Vec::new(); regions.len()];
    for &item in keyed.iter() {
        let at = regions
            .binary_search(&(item.0 >> REGION_SHIFT))
            .unwrap_or(0);
        if let Some(group) = groups.get_mut(at) {
            group.push(item);
        }
    }
    keyed.clear();
    for mut group in groups {
        if group.is_sorted() {
        } else if group.is_sorted_by(|a, b| a > b) {
            group.reverse();
        } else {
            group.sort_unstable();
        }
        keyed.extend(group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(vaddr: u64, memsz: u64, offset: u64) -> Segment {
        Segment {
            vaddr,
            paddr: vaddr,
            offset,
            filesz: memsz,
            memsz,
        }
    }

    #[test]
    fn regions_sorted_whatever_their_order() {
        let mut keyed: Vec<(u64, u32)> = Vec::new();
        for i in 0..100u32 {
            keyed.push((0xffff_8880_0000_0000 + u64::from(i) * 0x1000, i * 2));
            keyed.push((0xffff_ff00_0000_0000 - u64::from(i) * 0x1000, i * 2 + 1));
        }
        keyed.push((0xffff_c900_0000_5000, 500));
        keyed.push((0xffff_c900_0000_1000, 501));
        let mut expected = keyed.clone();
        expected.sort_unstable();
        sort_by_regions(&mut keyed);
        assert_eq!(keyed, expected);
    }

    #[test]
    fn overlaps_resolve_to_disjoint_pieces() {
        let index = SegmentIndex::build(
            &[seg(0x2000, 0x1000, 0), seg(0x1000, 0x2000, 0x5000)],
            |s| Some(s.vaddr),
        );
        assert_eq!(index.len(), 1);
        assert_eq!(index.find(0x2800).map(|p| p.offset), Some(0x5000));
        assert!(index.find(0x3000).is_none());
        assert!(index.find(0xfff).is_none());
    }
}
