//! One file's dirty (not yet committed) write data: non-overlapping byte ranges of `Bytes`.
//!
//! Owns the range bookkeeping only: newer data overrides older where they overlap, pieces
//! keep the sequence number of the write that produced them, and a flush removes exactly
//! the pieces it saw (sequence <= the snapshot's) so data written during a flush stays.
//! It also remembers the newest write whose data was discarded uncommitted, so a stable
//! write can tell that the flush it waited for did not make its data durable.
//! Must never copy payload bytes (pieces are `Bytes` slices of what the client sent), do
//! I/O, or know about budgets (the caller accounts bytes via [`DirtyBuffer::bytes`]).

use std::collections::BTreeMap;

use bytes::Bytes;

#[derive(Clone, Debug)]
struct Piece {
    data: Bytes,
    seq: u64,
}

/// Dirty ranges of one file, keyed by start offset.
#[derive(Debug, Default)]
pub struct DirtyBuffer {
    pieces: BTreeMap<u64, Piece>,
    bytes: u64,
    next_seq: u64,
    /// Newest sequence number discarded without being committed.
    dropped_through: u64,
}

/// What a flush saw: the pieces (ascending, non-overlapping) and the newest sequence.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub pieces: Vec<(u64, Bytes)>,
    pub upto_seq: u64,
}

/// A maximal contiguous stretch of dirty bytes `[lo, hi)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub lo: u64,
    pub hi: u64,
}

impl DirtyBuffer {
    /// Bytes held (overlaps already resolved).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// End of the last dirty byte, if any.
    pub fn end(&self) -> Option<u64> {
        self.pieces.iter().next_back().map(|(o, p)| o + p.data.len() as u64)
    }

    /// Records `data` at `offset`, overriding older data it overlaps; returns its sequence
    /// number. The caller has checked that `offset + data.len()` does not overflow.
    pub fn insert(&mut self, offset: u64, data: Bytes) -> u64 {
        if data.is_empty() {
            return self.next_seq;
        }
        let end = offset + data.len() as u64;
        let mut overlapped: Vec<u64> = Vec::new();
        if let Some((&o, p)) = self.pieces.range(..offset).next_back()
            && o + p.data.len() as u64 > offset {
                overlapped.push(o);
            }
        overlapped.extend(self.pieces.range(offset..end).map(|(&o, _)| o));
        for o in overlapped {
            let Some(old) = self.pieces.remove(&o) else { continue };
            let old_end = o + old.data.len() as u64;
            self.bytes -= old.data.len() as u64;
            if o < offset {
                let keep = old.data.slice(..(offset - o) as usize);
                self.bytes += keep.len() as u64;
                self.pieces.insert(o, Piece { data: keep, seq: old.seq });
            }
            if old_end > end {
                let keep = old.data.slice((end - o) as usize..);
                self.bytes += keep.len() as u64;
                self.pieces.insert(end, Piece { data: keep, seq: old.seq });
            }
        }
        self.next_seq += 1;
        self.bytes += data.len() as u64;
        self.pieces.insert(offset, Piece { data, seq: self.next_seq });
        self.next_seq
    }

    /// Whether the write numbered `seq` (from [`DirtyBuffer::insert`]) had its data
    /// discarded uncommitted ([`DirtyBuffer::discard_upto`], [`DirtyBuffer::clear`]).
    pub fn was_dropped(&self, seq: u64) -> bool {
        seq > 0 && seq <= self.dropped_through
    }

    /// Every piece, for a flush.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            pieces: self.pieces.iter().map(|(&o, p)| (o, p.data.clone())).collect(),
            upto_seq: self.next_seq,
        }
    }

    /// Pieces overlapping `[offset, end)`, for a read.
    pub fn overlapping(&self, offset: u64, end: u64) -> Vec<(u64, Bytes)> {
        let mut out = Vec::new();
        if let Some((&o, p)) = self.pieces.range(..offset).next_back()
            && o + p.data.len() as u64 > offset {
                out.push((o, p.data.clone()));
            }
        out.extend(self.pieces.range(offset..end).map(|(&o, p)| (o, p.data.clone())));
        out
    }

    /// Drops the pieces a failed flush held, uncommitted: as `remove_upto`, remembered.
    pub fn discard_upto(&mut self, upto_seq: u64) {
        self.remove_upto(upto_seq);
        self.dropped_through = self.dropped_through.max(upto_seq);
    }

    /// Drops the pieces a successful flush committed: those written at or before `upto_seq`
    /// (a newer write that overlapped them has already cut them down to what it left).
    pub fn remove_upto(&mut self, upto_seq: u64) {
        let mut freed = 0;
        self.pieces.retain(|_, p| {
            let keep = p.seq > upto_seq;
            if !keep {
                freed += p.data.len() as u64;
            }
            keep
        });
        self.bytes -= freed;
    }

    /// Discards everything, uncommitted (the file is gone, its lease lost, the process
    /// stalled).
    pub fn clear(&mut self) {
        self.pieces.clear();
        self.bytes = 0;
        self.dropped_through = self.next_seq;
    }
}

/// Groups ascending, non-overlapping pieces into contiguous runs.
pub fn runs(pieces: &[(u64, Bytes)]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for (o, d) in pieces {
        let end = o + d.len() as u64;
        match out.last_mut() {
            Some(r) if r.hi == *o => r.hi = end,
            _ => out.push(Run { lo: *o, hi: end }),
        }
    }
    out
}

/// Copies the parts of `pieces` that fall in `[start, start + out.len())` into `out`.
pub fn overlay(pieces: &[(u64, Bytes)], start: u64, out: &mut [u8]) {
    let end = start + out.len() as u64;
    for (o, d) in pieces {
        let (lo, hi) = ((*o).max(start), (o + d.len() as u64).min(end));
        if lo >= hi {
            continue;
        }
        let src = &d[(lo - o) as usize..(hi - o) as usize];
        out[(lo - start) as usize..(hi - start) as usize].copy_from_slice(src);
    }
}

/// Whether `pieces` cover every byte of `[start, end)`.
pub fn covers(pieces: &[(u64, Bytes)], start: u64, end: u64) -> bool {
    let mut next = start;
    for (o, d) in pieces {
        if *o > next {
            return false;
        }
        next = next.max(o + d.len() as u64);
        if next >= end {
            return true;
        }
    }
    next >= end
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn render(buf: &DirtyBuffer, len: usize) -> Vec<Option<u8>> {
        let mut out = vec![None; len];
        for (o, d) in buf.snapshot().pieces {
            for (i, b) in d.iter().enumerate() {
                out[o as usize + i] = Some(*b);
            }
        }
        out
    }

    #[test]
    fn newer_data_overrides_older() {
        let mut b = DirtyBuffer::default();
        b.insert(0, Bytes::from_static(b"aaaaaaaaaa"));
        b.insert(3, Bytes::from_static(b"bbb"));
        b.insert(8, Bytes::from_static(b"cccc"));
        assert_eq!(b.bytes(), 12);
        assert_eq!(b.end(), Some(12));
        let got: Vec<u8> = render(&b, 12).into_iter().map(|x| x.unwrap_or(b'.')).collect();
        assert_eq!(&got, b"aaabbbaacccc");
        assert_eq!(runs(&b.snapshot().pieces), vec![Run { lo: 0, hi: 12 }]);
    }

    #[test]
    fn flush_keeps_data_written_after_its_snapshot() {
        let mut b = DirtyBuffer::default();
        b.insert(0, Bytes::from_static(b"aaaa"));
        let snap = b.snapshot();
        b.insert(2, Bytes::from_static(b"bb"));
        b.insert(10, Bytes::from_static(b"zz"));
        b.remove_upto(snap.upto_seq);
        let left = b.snapshot().pieces;
        assert_eq!(left, vec![(2, Bytes::from_static(b"bb")), (10, Bytes::from_static(b"zz"))]);
        assert_eq!(b.bytes(), 4);
        assert_eq!(runs(&left), vec![Run { lo: 2, hi: 4 }, Run { lo: 10, hi: 12 }]);
    }

    #[test]
    fn overlay_and_cover() {
        let pieces = vec![(2u64, Bytes::from_static(b"xy")), (4, Bytes::from_static(b"z"))];
        let mut out = [0u8; 6];
        overlay(&pieces, 1, &mut out);
        assert_eq!(&out, b"\0xyz\0\0");
        assert!(covers(&pieces, 2, 5));
        assert!(covers(&pieces, 3, 4));
        assert!(!covers(&pieces, 1, 4));
        assert!(!covers(&pieces, 2, 6));
    }

    proptest! {
        #[test]
        fn matches_a_byte_model(writes in proptest::collection::vec((0usize..200, 1usize..60, any::<u8>()), 1..40)) {
            let mut b = DirtyBuffer::default();
            let mut model = vec![None; 260];
            for (off, len, fill) in writes {
                b.insert(off as u64, Bytes::from(vec![fill; len]));
                for m in &mut model[off..off + len] {
                    *m = Some(fill);
                }
                prop_assert_eq!(render(&b, 260), model.clone());
                prop_assert_eq!(b.bytes() as usize, model.iter().filter(|m| m.is_some()).count());
            }
        }
    }
}
