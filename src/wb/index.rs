//! The block index: buffered blocks keyed by start offset, never overlapping.
//!
//! Each block is a window `[buf_off, buf_off + len)` of an immutable shared buffer. A
//! new write becomes a new block; blocks it overlaps are trimmed to the parts it does not
//! cover (the pieces keep pointing into their old buffers, so nothing is copied). Ordering
//! is by start offset only, and overlap is checked explicitly: a comparator that calls
//! overlapping ranges "equal" breaks the map's ordering and loses blocks.
//!
//! Each block carries `seq`: the oldest write whose bytes it holds that has not been
//! written to the file. `flushing` names the in-flight write op that is writing it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::pool::BufRef;

/// One buffered, non-overlapping byte range.
#[derive(Clone)]
pub(crate) struct Block {
    pub len: u64,
    pub buf: BufRef,
    pub buf_off: usize,
    pub seq: u64,
    pub flushing: Option<usize>,
}

impl Block {
    /// The block's bytes.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf.as_slice()[self.buf_off..self.buf_off + self.len as usize]
    }

    /// Dirty and ending where its buffer's filled bytes end: appending to the buffer
    /// grows this block and touches no byte anything else references.
    fn extendable(&self) -> bool {
        self.flushing.is_none() && self.buf_off + self.len as usize == self.buf.filled()
    }

    fn piece(&self, skip: u64, len: u64) -> Block {
        Block {
            len,
            buf: self.buf.clone(),
            buf_off: self.buf_off + skip as usize,
            seq: self.seq,
            flushing: self.flushing,
        }
    }
}

/// Buffered blocks by start offset, plus the set of dirty (not yet sent) ones.
#[derive(Default)]
pub(crate) struct Index {
    map: BTreeMap<u64, Block>,
    dirty: BTreeSet<u64>,
    /// (seq, start) of dirty blocks, oldest on top: the planner asks for the oldest
    /// unwritten write on every pass while a force waits. Entries of blocks that stopped
    /// being dirty are dropped lazily, once they reach the top (the top is always live);
    /// a heap keeps its capacity, so this costs no allocation per write.
    dirty_by_seq: BinaryHeap<Reverse<(u64, u64)>>,
    dirty_bytes: u64,
}

impl Index {
    /// Bytes in dirty blocks.
    pub(crate) fn dirty_bytes(&self) -> u64 {
        self.dirty_bytes
    }

    /// Number of dirty blocks.
    pub(crate) fn dirty_count(&self) -> usize {
        self.dirty.len()
    }

    /// Number of blocks (dirty or being written).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn put(&mut self, start: u64, block: Block) {
        if block.flushing.is_none() {
            self.dirty.insert(start);
            self.dirty_by_seq.push(Reverse((block.seq, start)));
            self.dirty_bytes += block.len;
        }
        self.map.insert(start, block);
    }

    fn take(&mut self, start: u64) -> Option<Block> {
        let block = self.map.remove(&start)?;
        if block.flushing.is_none() {
            self.dirty.remove(&start);
            self.dirty_bytes -= block.len;
        }
        Some(block)
    }

    /// Stores `buf[..len]` as the newest bytes of `[off, off + len)`, written by write
    /// number `seq`. Overlapped blocks are trimmed; a dirty block's unwritten seq passes to
    /// the new block that replaces its bytes.
    pub(crate) fn insert(&mut self, off: u64, len: u64, buf: BufRef, seq: u64) {
        // The common rewrite of a dirty page: same range, so swap the buffer in place
        // (the replaced one returns to the pool) and keep the older unwritten seq.
        if let Some(b) = self.map.get_mut(&off) {
            if b.len == len && b.flushing.is_none() {
                b.buf = buf;
                b.buf_off = 0;
                return;
            }
        }
        let end = off + len;
        let mut oldest = seq;
        while let Some((&bs, b)) = self.map.range(..end).next_back() {
            if bs + b.len <= off {
                break;
            }
            let old = self.take(bs).expect("just found");
            if old.flushing.is_none() {
                oldest = oldest.min(old.seq);
            }
            let be = bs + old.len;
            if be > end {
                self.put(end, old.piece(end - bs, be - end));
            }
            if bs < off {
                self.put(bs, old.piece(0, off - bs));
            }
        }
        self.put(
            off,
            Block {
                len,
                buf,
                buf_off: 0,
                seq: oldest,
                flushing: None,
            },
        );
        self.prune();
    }

    /// Continues the dirty extent that ends at `off` with `data`, in place: copied into
    /// the extent's buffer, which must have room, past the bytes anyone references. No
    /// new block, heap entry or buffer reference; the extent keeps its oldest unwritten
    /// seq (the new write's is newer). Returns false (changing nothing) when no dirty
    /// extent ends at `off` with room, or when a block lies in `[off, off + len)`.
    pub(crate) fn try_extend(&mut self, off: u64, data: &[u8]) -> bool {
        let len = data.len() as u64;
        if self.map.range(off..off + len).next().is_some() {
            return false;
        }
        let Some((&bs, b)) = self.map.range_mut(..off).next_back() else {
            return false;
        };
        if bs + b.len != off || !b.extendable() || b.buf.room() < data.len() {
            return false;
        }
        // SAFETY: `&mut self` is the state lock, which serializes every append. The
        // block is dirty (no write op references it) and ends at its buffer's filled
        // length, so the appended bytes extend exactly this block.
        unsafe { b.buf.append(data) };
        b.len += len;
        debug_assert_eq!(b.buf_off + b.len as usize, b.buf.filled());
        self.dirty_bytes += len;
        true
    }

    /// Whether the dirty extent at `start` can still grow in place (see `try_extend`).
    pub(crate) fn open_extent(&self, start: u64) -> bool {
        self.map
            .get(&start)
            .is_some_and(|b| b.extendable() && b.buf.room() > 0)
    }

    /// Blocks overlapping `[off, end)`, in offset order, as (start, block).
    pub(crate) fn overlapping(&self, off: u64, end: u64) -> impl Iterator<Item = (u64, &Block)> {
        let before = self
            .map
            .range(..off)
            .next_back()
            .filter(|(s, b)| **s + b.len > off);
        before
            .into_iter()
            .chain(self.map.range(off..end))
            .map(|(s, b)| (*s, b))
    }

    /// The block starting exactly at `start`.
    pub(crate) fn get(&self, start: u64) -> Option<&Block> {
        self.map.get(&start)
    }

    /// Dirty block starts at or after `from`, in order.
    pub(crate) fn dirty_from(&self, from: u64) -> impl Iterator<Item = u64> + '_ {
        self.dirty.range(from..).copied()
    }

    /// Marks the dirty block at `start` as being written by `op`.
    pub(crate) fn mark_flushing(&mut self, start: u64, op: usize) -> &Block {
        let was_dirty = self.dirty.remove(&start);
        debug_assert!(was_dirty);
        let b = self.map.get_mut(&start).expect("dirty block exists");
        self.dirty_bytes -= b.len;
        b.flushing = Some(op);
        self.prune();
        &self.map[&start]
    }

    /// Restores the invariant that the top of `dirty_by_seq` names a dirty block with
    /// that seq, and rebuilds the heap when stale entries outnumber live ones.
    fn prune(&mut self) {
        if self.dirty_by_seq.len() > 2 * self.dirty.len() + 1024 {
            let live = self.dirty.iter().map(|&s| Reverse((self.map[&s].seq, s)));
            let rebuilt: Vec<_> = live.collect();
            self.dirty_by_seq.clear();
            self.dirty_by_seq.extend(rebuilt);
        }
        while let Some(&Reverse((seq, start))) = self.dirty_by_seq.peek() {
            let live = self
                .map
                .get(&start)
                .is_some_and(|b| b.flushing.is_none() && b.seq == seq);
            if live {
                break;
            }
            self.dirty_by_seq.pop();
        }
    }

    fn flushing_by(&self, op: usize, off: u64, end: u64) -> Vec<u64> {
        self.overlapping(off, end)
            .filter(|(_, b)| b.flushing == Some(op))
            .map(|(s, _)| s)
            .collect()
    }

    /// `op` finished writing `[off, end)`: its blocks leave the index (their bytes are in
    /// the file now). Blocks rewritten meanwhile are newer and stay.
    pub(crate) fn complete(&mut self, op: usize, off: u64, end: u64) {
        for s in self.flushing_by(op, off, end) {
            self.map.remove(&s);
        }
    }

    /// `op` failed: its blocks become dirty again (and stay readable).
    pub(crate) fn unflush(&mut self, op: usize, off: u64, end: u64) {
        for s in self.flushing_by(op, off, end) {
            let mut b = self.map.remove(&s).expect("listed");
            b.flushing = None;
            self.put(s, b);
        }
        self.prune();
    }

    /// Drops every block wholly below `new_start` without writing it.
    pub(crate) fn drop_below(&mut self, new_start: u64) {
        let gone: Vec<u64> = self
            .map
            .range(..new_start)
            .filter(|(s, b)| **s + b.len <= new_start)
            .map(|(s, _)| *s)
            .collect();
        for s in gone {
            self.take(s);
        }
        self.prune();
    }

    /// Drops every byte at or past `len` (a shrink): blocks past it go, a block across it
    /// keeps its part below. Blocks being written stay marked so: their write completes
    /// (or fails) as usual and finds only what is left.
    pub(crate) fn drop_from(&mut self, len: u64) {
        let gone: Vec<u64> = self.overlapping(len, u64::MAX).map(|(s, _)| s).collect();
        for s in gone {
            let b = self.take(s).expect("just listed");
            if s < len {
                self.put(s, b.piece(0, len - s));
            }
        }
        self.prune();
    }

    /// The smallest unwritten seq among dirty blocks overlapping `range` (all when `None`).
    pub(crate) fn min_dirty_seq(&self, range: Option<(u64, u64)>) -> Option<u64> {
        match range {
            None => self.dirty_by_seq.peek().map(|&Reverse((seq, _))| seq),
            Some((off, end)) => self
                .overlapping(off, end)
                .filter(|(_, b)| b.flushing.is_none())
                .map(|(_, b)| b.seq)
                .min(),
        }
    }
}

/// The tests' one random number generator (tests/common/rng.rs).
#[cfg(test)]
#[path = "../../tests/common/rng.rs"]
mod test_rng;

#[cfg(test)]
mod tests {
    use super::test_rng::Rng;
    use super::*;
    use crate::wb::pool::Pool;

    /// A reference model: the newest byte and its write seq per offset.
    fn check(index: &Index, model: &BTreeMap<u64, (u8, u64)>) {
        let mut prev_end = 0;
        for (&s, b) in &index.map {
            assert!(s >= prev_end, "blocks overlap at {s}");
            prev_end = s + b.len;
            for (i, &byte) in b.bytes().iter().enumerate() {
                let (want, seq) = model[&(s + i as u64)];
                assert_eq!(byte, want, "byte at {}", s + i as u64);
                assert!(
                    b.seq <= seq,
                    "block seq {} newer than byte's write {}",
                    b.seq,
                    seq
                );
            }
        }
        let covered: u64 = index.map.values().map(|b| b.len).sum();
        assert_eq!(
            covered as usize,
            model.len(),
            "every written byte is in exactly one block"
        );
        assert_eq!(index.dirty_bytes, covered);
        let oldest = index.map.values().map(|b| b.seq).min();
        assert_eq!(
            index.min_dirty_seq(None),
            oldest,
            "the by-seq set agrees with the blocks"
        );
        assert!(index.dirty_by_seq.len() >= index.dirty.len());
    }

    #[test]
    fn random_overlapping_inserts_match_a_byte_model() {
        let pool = Pool::new(1 << 30, 1 << 20, 1);
        let mut index = Index::default();
        let mut model = BTreeMap::new();
        let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
        for seq in 1..2000u64 {
            let x = rng.next();
            let off = x % 200;
            let len = 1 + (x >> 20) % 40;
            let byte = seq as u8;
            let (mut b, _) = pool.reserve(len as usize, || {}).unwrap();
            b.as_mut_slice().fill(byte);
            index.insert(off, len, b, seq);
            for o in off..off + len {
                model.insert(o, (byte, seq));
            }
            check(&index, &model);
        }
    }

    #[test]
    fn oldest_dirty_seq_survives_flushes_failures_and_truncation() {
        let pool = Pool::new(1 << 30, 1 << 20, 1);
        let mut index = Index::default();
        let mut rng = Rng::new(0x2545_F491_4F6C_DD1D);
        let mut flushing: Vec<(usize, u64, u64)> = Vec::new();
        for seq in 1..5000u64 {
            let x = rng.next();
            match x % 8 {
                0 | 1 => {
                    // Send some dirty block.
                    let next = index.dirty_from(x % 300).next();
                    if let Some(start) = next {
                        let len = index.get(start).unwrap().len;
                        index.mark_flushing(start, seq as usize);
                        flushing.push((seq as usize, start, start + len));
                    }
                }
                2 if !flushing.is_empty() => {
                    let (op, s, e) = flushing.swap_remove((x >> 8) as usize % flushing.len());
                    if x & 1 == 0 {
                        index.complete(op, s, e);
                    } else {
                        index.unflush(op, s, e);
                    }
                }
                3 if x % 64 == 3 => index.drop_below(x % 100),
                4 if x % 64 == 4 => index.drop_from(x % 300),
                _ => {
                    let (off, len) = (x % 300, 1 + (x >> 20) % 40);
                    let (b, _) = pool.reserve(len as usize, || {}).unwrap();
                    index.insert(off, len, b, seq);
                }
            }
            let want = index
                .map
                .values()
                .filter(|b| b.flushing.is_none())
                .map(|b| b.seq)
                .min();
            assert_eq!(index.min_dirty_seq(None), want, "step {seq}");
        }
    }

    #[test]
    fn flushing_blocks_complete_or_return_to_dirty() {
        let pool = Pool::new(1 << 20, 100, 1);
        let mut index = Index::default();
        let buf = |v: u8, n: usize| {
            let (mut b, _) = pool.reserve(n, || {}).unwrap();
            b.as_mut_slice().fill(v);
            b
        };
        index.insert(0, 10, buf(1, 10), 1);
        index.insert(10, 10, buf(2, 10), 2);
        index.mark_flushing(0, 7);
        assert_eq!(index.dirty_bytes(), 10);
        // Rewrite part of the flushing block: the rewrite is dirty, the rest still flushing.
        index.insert(5, 2, buf(3, 2), 3);
        assert_eq!(index.min_dirty_seq(None), Some(2));
        assert_eq!(index.min_dirty_seq(Some((0, 5))), None);
        index.complete(7, 0, 10);
        let starts: Vec<u64> = index.map.keys().copied().collect();
        assert_eq!(
            starts,
            vec![5, 10],
            "flushed pieces left; the rewrite stayed"
        );
        index.mark_flushing(5, 8);
        index.unflush(8, 5, 7);
        assert_eq!(index.dirty_count(), 2);
        index.drop_below(7);
        assert_eq!(index.len(), 1);
        index.drop_below(15);
        assert_eq!(index.len(), 1, "a block partly below the start is kept");
    }
}
