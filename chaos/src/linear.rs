//! The model checker: whether the recorded history of one key (a shared file's content, or
//! whether a name exists in a shared directory) is linearizable — whether every operation
//! can be placed at one instant between its call and its answer so that, in that order,
//! each answer is what a single copy of the key would have given.
//!
//! Owns the search (Wing & Gong's, with memoized (done set, state) pairs as Porcupine
//! does) and the model of a key. An operation whose answer never came (the call timed out,
//! its connection broke, or the server said "try again later", which tells nothing of
//! whether it took effect) may take effect at any instant from its call until
//! [`UNCERTAIN_WINDOW`] later, or never; one that took effect later than that is a bug.
//! Pure: times are plain numbers, so histories can be written by hand in tests.
//! Must never: accept a history by giving up (the search is complete; its cost is bounded
//! by how many operations overlap, which the workload keeps small).

use std::collections::HashSet;

/// How long after its call an unanswered operation may still take effect: above the
/// gateway's own deadlines (a chunk put gives up after 20 s, a metad call sooner) and the
/// client's 30 s call timeout.
pub const UNCERTAIN_WINDOW_MS: u64 = 60_000;

/// The client number of the checker's own calls after healing.
pub const CHECKER: usize = usize::MAX;

/// What a client asked of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Replace a file's whole content with the content numbered `v`.
    Write(u64),
    /// Read a file's content.
    Read,
    /// Create a name (exclusive: GUARDED).
    Create,
    /// Remove a name.
    Remove,
    /// Look a name up.
    Lookup,
}

/// What the server answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    /// A write, create or remove done.
    Done,
    /// A read returned the content numbered `v`.
    Value(u64),
    /// Create: the name existed. Lookup: it exists.
    Exists,
    /// Remove or lookup: no such name.
    Missing,
}

/// One operation: called at `call_ms`, answered `ret` at `ret_ms` (`None`: never answered,
/// or answered "try again later").
#[derive(Clone, Debug)]
pub struct Entry {
    pub call: Call,
    pub call_ms: u64,
    pub answer: Option<(Ret, u64)>,
    /// Who made the call (for the report only).
    pub client: usize,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.client {
            CHECKER => write!(f, "checker")?,
            c => write!(f, "client {c}")?,
        }
        write!(f, " {:?} at {} ms", self.call, self.call_ms)?;
        match self.answer {
            Some((r, at)) => write!(f, " -> {r:?} at {at} ms"),
            None => write!(f, " -> no answer"),
        }
    }
}

/// The state after `call` answered `ret` (`None` for an unanswered one) in state `s`, or
/// `None` if a single copy could not have answered that. A file's state is its content's
/// number (0: empty); a name's is 1 when it exists, 0 when not.
fn step(s: u64, call: Call, ret: Option<Ret>) -> Option<u64> {
    match (call, ret) {
        (Call::Write(v), None | Some(Ret::Done)) => Some(v),
        (Call::Read, Some(Ret::Value(v))) => (s == v).then_some(s),
        (Call::Create, None) => Some(1),
        (Call::Create, Some(Ret::Done)) => (s == 0).then_some(1),
        (Call::Create, Some(Ret::Exists)) => (s == 1).then_some(1),
        (Call::Remove, None) => Some(0),
        (Call::Remove, Some(Ret::Done)) => (s == 1).then_some(0),
        (Call::Remove | Call::Lookup, Some(Ret::Missing)) => (s == 0).then_some(0),
        (Call::Lookup, Some(Ret::Exists)) => (s == 1).then_some(1),
        _ => None,
    }
}

/// `Ok` if `history` (any order) is linearizable from state `init`; otherwise why not.
pub fn check(history: &[Entry], init: u64) -> Result<(), String> {
    // An unanswered write of a value no read returned changes nothing any answer shows:
    // "it never took effect" explains the history at least as well as any instant would,
    // so it is left out (each one kept would double the orders to try while it is open).
    let seen: HashSet<u64> = history
        .iter()
        .filter_map(|e| match e.answer {
            Some((Ret::Value(v), _)) => Some(v),
            _ => None,
        })
        .collect();
    let mut ops: Vec<&Entry> = history
        .iter()
        .filter(|e| !matches!((e.call, e.answer), (Call::Write(v), None) if !seen.contains(&v)))
        .collect();
    ops.sort_by_key(|e| e.call_ms);
    let n = ops.len();
    let words = n.div_ceil(64);
    let answered: Vec<usize> = (0..n).filter(|&i| ops[i].answer.is_some()).collect();
    let is_done = |bits: &[u64], i: usize| bits[i / 64] & (1 << (i % 64)) != 0;
    // The operations that may come next after `bits`: not yet placed, called before the
    // earliest answer among the answered ones not yet placed (which must come first or
    // overlap it), and for an unanswered one, within its window. Answered ones first.
    let candidates = |bits: &[u64]| -> Vec<usize> {
        let first_answer = answered.iter().filter(|&&i| !is_done(bits, i)).filter_map(|&i| ops[i].answer.map(|a| a.1)).min();
        let Some(limit) = first_answer else { return Vec::new() };
        let mut c: Vec<usize> = (0..n)
            .filter(|&i| !is_done(bits, i) && ops[i].call_ms <= limit)
            .filter(|&i| ops[i].answer.is_some() || ops[i].call_ms + UNCERTAIN_WINDOW_MS >= limit)
            .collect();
        c.sort_by_key(|&i| ops[i].answer.is_none());
        c
    };
    let all_answered_done = |bits: &[u64]| answered.iter().all(|&i| is_done(bits, i));

    struct Frame {
        bits: Vec<u64>,
        state: u64,
        next: Vec<usize>,
        tried: usize,
    }
    let start = vec![0u64; words];
    if all_answered_done(&start) {
        return Ok(());
    }
    let mut seen: HashSet<(Vec<u64>, u64)> = HashSet::new();
    let mut stack = vec![Frame { next: candidates(&start), bits: start, state: init, tried: 0 }];
    // The furthest any order got: how many were placed, the state then, and which.
    let mut deepest = (0, init, vec![0u64; words]);
    while let Some(top) = stack.last_mut() {
        let Some(&i) = top.next.get(top.tried) else {
            stack.pop();
            continue;
        };
        top.tried += 1;
        let Some(state) = step(top.state, ops[i].call, ops[i].answer.map(|a| a.0)) else { continue };
        let mut bits = top.bits.clone();
        bits[i / 64] |= 1 << (i % 64);
        if all_answered_done(&bits) {
            return Ok(());
        }
        if !seen.insert((bits.clone(), state)) {
            continue;
        }
        let placed = bits.iter().map(|w| w.count_ones() as usize).sum::<usize>();
        if placed > deepest.0 {
            deepest = (placed, state, bits.clone());
        }
        stack.push(Frame { next: candidates(&bits), bits, state, tried: 0 });
    }
    let (placed, state, bits) = deepest;
    // Where it stuck: the answered operation that had to come next (the earliest answer
    // not placed), and what else was open then.
    let stuck = answered.iter().filter(|&&i| !is_done(&bits, i)).min_by_key(|&&i| ops[i].answer.map(|a| a.1));
    let open: Vec<String> = candidates(&bits).iter().take(6).map(|&i| ops[i].to_string()).collect();
    let mut last: Vec<usize> = (0..n).filter(|&i| is_done(&bits, i)).collect();
    last.sort_by_key(|&i| ops[i].answer.map_or(ops[i].call_ms, |a| a.1));
    let before: Vec<String> = last.iter().rev().take(4).rev().map(|&i| ops[i].to_string()).collect();
    Err(format!(
        "not linearizable: at most {placed} of {n} operations can be ordered; then the state is {state}, \
         the next must be [{}], open are [{}], the last placed were [{}]",
        stuck.map_or("none".into(), |&i| ops[i].to_string()),
        open.join("; "),
        before.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: Call, call_ms: u64, answer: Option<(Ret, u64)>) -> Entry {
        Entry { call, call_ms, answer, client: 0 }
    }

    #[test]
    fn overlapping_writes_may_be_read_in_either_order_but_not_after_a_later_read_saw_the_newer() {
        // Two overlapping writes; a read after both sees either.
        let base = vec![op(Call::Write(1), 0, Some((Ret::Done, 10))), op(Call::Write(2), 5, Some((Ret::Done, 15)))];
        for v in [1, 2] {
            let mut h = base.clone();
            h.push(op(Call::Read, 20, Some((Ret::Value(v), 25))));
            assert!(check(&h, 0).is_ok(), "reading {v}");
        }
        // Once a read saw 2, a later read cannot see 1 again (a stale read).
        let mut h = base.clone();
        h.push(op(Call::Read, 20, Some((Ret::Value(2), 25))));
        h.push(op(Call::Read, 30, Some((Ret::Value(1), 35))));
        assert!(check(&h, 0).is_err());
        // Nor can a read return what was never written, or the old content after a write.
        assert!(check(&[op(Call::Read, 0, Some((Ret::Value(7), 1)))], 0).is_err());
        let h = [op(Call::Write(1), 0, Some((Ret::Done, 10))), op(Call::Read, 11, Some((Ret::Value(0), 12)))];
        assert!(check(&h, 0).is_err(), "an acknowledged write lost");
    }

    #[test]
    fn an_unanswered_write_may_take_effect_within_its_window_or_never() {
        let lost = op(Call::Write(9), 100, None);
        let done = op(Call::Write(1), 0, Some((Ret::Done, 10)));
        for v in [1, 9] {
            let h = [done.clone(), lost.clone(), op(Call::Read, 200, Some((Ret::Value(v), 210)))];
            assert!(check(&h, 0).is_ok(), "reading {v}");
        }
        // But not first visible, then gone, then back.
        let h = [
            done.clone(),
            lost.clone(),
            op(Call::Read, 200, Some((Ret::Value(9), 210))),
            op(Call::Read, 300, Some((Ret::Value(1), 310))),
        ];
        assert!(check(&h, 0).is_err());
        // Nor long after its window: a request that lands a minute late is a bug.
        let late = 100 + UNCERTAIN_WINDOW_MS + 1_000;
        let h = [
            done,
            lost,
            op(Call::Read, 200, Some((Ret::Value(1), 210))),
            op(Call::Read, late, Some((Ret::Value(9), late + 10))),
        ];
        assert!(check(&h, 0).is_err());
    }

    #[test]
    fn names_are_created_once_and_removed_once() {
        // Two clients create the same name at once: exactly one may succeed.
        let both = [op(Call::Create, 0, Some((Ret::Done, 10))), op(Call::Create, 1, Some((Ret::Done, 11)))];
        assert!(check(&both, 0).is_err());
        let one = [op(Call::Create, 0, Some((Ret::Done, 10))), op(Call::Create, 1, Some((Ret::Exists, 11)))];
        assert!(check(&one, 0).is_ok());
        // A remove acknowledged, then the name still found: a lost remove.
        let h = [
            op(Call::Create, 0, Some((Ret::Done, 10))),
            op(Call::Remove, 20, Some((Ret::Done, 30))),
            op(Call::Lookup, 40, Some((Ret::Exists, 50))),
        ];
        assert!(check(&h, 0).is_err());
        // An unanswered create explains a name found later.
        let h = [op(Call::Create, 0, None), op(Call::Lookup, 40, Some((Ret::Exists, 50)))];
        assert!(check(&h, 0).is_ok());
    }

    #[test]
    fn many_unanswered_writes_nobody_read_do_not_blow_the_search_up() {
        // 200 writes answered "try again" while 3 clients write and read the same file:
        // kept as "may take effect within a minute", each would double the orders open.
        let mut h = Vec::new();
        let mut last = 0;
        for k in 0..200u64 {
            let t = k * 10;
            h.push(op(Call::Write(1_000 + k), t, None));
            h.push(op(Call::Write(k + 1), t + 1, Some((Ret::Done, t + 5))));
            h.push(op(Call::Read, t + 6, Some((Ret::Value(k + 1), t + 8))));
            last = k + 1;
        }
        assert!(check(&h, 0).is_ok());
        // One of them read back still counts: it may take effect, but only once.
        h.push(op(Call::Read, 3_000, Some((Ret::Value(1_050), 3_001))));
        assert!(check(&h, 0).is_ok(), "an unanswered write may land within its window");
        h.push(op(Call::Read, 3_010, Some((Ret::Value(last), 3_011))));
        assert!(check(&h, 0).is_err(), "but not go back to an older value after it was read");
    }

    #[test]
    fn a_long_history_of_three_clients_is_checked_quickly() {
        // 3 clients, 3,000 operations, each overlapping its neighbours: the search stays
        // linear (a regression guard against exponential behaviour, not a timing test).
        let mut h = Vec::new();
        let mut last = 0;
        for k in 0..1_000u64 {
            let t = k * 10;
            h.push(op(Call::Write(k + 1), t, Some((Ret::Done, t + 12))));
            h.push(op(Call::Read, t + 1, Some((Ret::Value(last), t + 3))));
            h.push(op(Call::Read, t + 13, Some((Ret::Value(k + 1), t + 14))));
            last = k + 1;
        }
        assert!(check(&h, 0).is_ok());
    }
}
