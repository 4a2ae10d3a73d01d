//! Replace-by-range arithmetic on extent lists, with no storage attached.
//!
//! Owns: what committing `[start, end)` does to the extents already stored (which to drop,
//! which pieces of partially covered extents to keep), truncation, and clipping for reads.
//! Must never: touch storage or reference counts (apply does, from the plan returned here).

use crate::model::Extent;

/// The effect of replacing a byte range: delete `remove` rows, then insert `insert` rows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RangePlan {
    pub remove: Vec<Extent>,
    pub insert: Vec<Extent>,
}

/// Plans replacing everything in `[start, end)` by `new`.
///
/// `overlapping` are the stored extents that overlap the range (unclipped). An extent that
/// sticks out on either side is split: its outside pieces are re-inserted, pointing at the same
/// chunk with an adjusted `chunk_offset`, so writes to other ranges survive.
pub fn replace_range(overlapping: &[Extent], start: u64, end: u64, new: &[Extent]) -> RangePlan {
    let mut plan = RangePlan { remove: overlapping.to_vec(), insert: Vec::with_capacity(new.len() + 2) };
    for e in overlapping {
        if e.offset < start {
            plan.insert.push(Extent { length: start - e.offset, ..*e });
        }
        if e.end() > end {
            plan.insert.push(Extent {
                offset: end,
                length: e.end() - end,
                chunk_offset: e.chunk_offset + (end - e.offset),
                ..*e
            });
        }
    }
    plan.insert.extend_from_slice(new);
    plan
}

/// Clips `e` to `[start, end)`, or `None` when they do not overlap.
pub fn clip(e: &Extent, start: u64, end: u64) -> Option<Extent> {
    let s = e.offset.max(start);
    let t = e.end().min(end);
    if s >= t {
        return None;
    }
    Some(Extent { offset: s, length: t - s, chunk_offset: e.chunk_offset + (s - e.offset), ..*e })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(offset: u64, length: u64, tag: u8) -> Extent {
        Extent { offset, length, hash: [tag; 32], chunk_offset: 0, chunk_length: length }
    }

    #[test]
    fn overwriting_the_middle_splits_the_extent() {
        let old = ext(0, 100, 1);
        let new = ext(40, 20, 2);
        let plan = replace_range(&[old], 40, 60, &[new]);
        assert_eq!(plan.remove, vec![old]);
        assert_eq!(
            plan.insert,
            vec![
                Extent { offset: 0, length: 40, ..old },
                Extent { offset: 60, length: 40, chunk_offset: 60, ..old },
                new,
            ]
        );
    }

    #[test]
    fn a_range_covering_extents_drops_them_whole() {
        let a = ext(0, 10, 1);
        let b = ext(10, 10, 2);
        let plan = replace_range(&[a, b], 0, 20, &[]);
        assert_eq!(plan.remove, vec![a, b]);
        assert!(plan.insert.is_empty());
    }

    #[test]
    fn clipping_adjusts_the_chunk_offset() {
        let e = Extent { offset: 100, length: 50, hash: [3; 32], chunk_offset: 10, chunk_length: 100 };
        assert_eq!(clip(&e, 120, 200), Some(Extent { offset: 120, length: 30, chunk_offset: 30, ..e }));
        assert_eq!(clip(&e, 0, 110), Some(Extent { offset: 100, length: 10, ..e }));
        assert_eq!(clip(&e, 150, 200), None);
        assert_eq!(clip(&e, 0, 100), None);
    }
}
