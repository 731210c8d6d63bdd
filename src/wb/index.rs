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
use std::collections::{BTreeMap, BinaryHeap};

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

    /// Ending where its buffer's filled bytes end: appending to the buffer touches no
    /// byte anything else references.
    fn at_fill(&self) -> bool {
        self.buf_off + self.len as usize == self.buf.filled()
    }

    /// Dirty and at its buffer's fill: appending to the buffer grows this block.
    fn extendable(&self) -> bool {
        self.flushing.is_none() && self.at_fill()
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

/// Buffered blocks by start offset. A block is dirty (not yet sent) when its `flushing`
/// is `None`: the dirty blocks are found by walking the map, not kept in a second tree,
/// so storing a write costs one tree insert, not two (a `BTreeSet` of dirty starts cost
/// the write path a descent and node allocations, and the planner a removal per send).
#[derive(Default)]
pub(crate) struct Index {
    map: BTreeMap<u64, Block>,
    /// How many blocks are dirty.
    dirty_count: usize,
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
        self.dirty_count
    }

    /// Number of blocks (dirty or being written).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn put(&mut self, start: u64, block: Block) {
        if block.flushing.is_none() {
            self.dirty_count += 1;
            self.dirty_by_seq.push(Reverse((block.seq, start)));
            self.dirty_bytes += block.len;
        }
        self.map.insert(start, block);
    }

    fn take(&mut self, start: u64) -> Option<Block> {
        let block = self.map.remove(&start)?;
        if block.flushing.is_none() {
            self.dirty_count -= 1;
            self.dirty_bytes -= block.len;
        }
        Some(block)
    }

    /// Stores `buf[..len]` as the newest bytes of `[off, off + len)`, written by write
    /// number `seq`. Overlapped blocks are trimmed; a dirty block's unwritten seq passes to
    /// the new block that replaces its bytes. `seq` is newer than every write stored
    /// before.
    pub(crate) fn insert(&mut self, off: u64, len: u64, buf: BufRef, seq: u64) {
        self.insert_at(off, len, buf, 0, seq)
    }

    /// [`insert`](Index::insert) of the bytes `[buf_off, buf_off + len)` of `buf` (a
    /// window of a packing buffer, which holds several writes side by side).
    pub(crate) fn insert_at(&mut self, off: u64, len: u64, buf: BufRef, buf_off: usize, seq: u64) {
        debug_assert!(self.min_dirty_seq(None).is_none_or(|m| m < seq));
        debug_assert!(buf_off + len as usize <= buf.filled());
        let end = off + len;
        let block = |buf, seq| Block {
            len,
            buf,
            buf_off,
            seq,
            flushing: None,
        };
        // One descent settles the two common cases: the last block starting before
        // `end` is the only one that can overlap the range if it starts at or before
        // `off` (blocks do not overlap).
        match self.map.range_mut(..end).next_back() {
            // The rewrite of a dirty page: same range, so swap the buffer in place (the
            // replaced one returns to the pool) and keep the older unwritten seq.
            Some((&bs, b)) if bs == off && b.len == len && b.flushing.is_none() => {
                b.buf = buf;
                b.buf_off = buf_off;
                return;
            }
            Some((&bs, b)) if bs + b.len > off => {}
            // Nothing overlaps: a new block, newer than every dirty one, so the by-seq
            // heap's top stays live and needs no pruning.
            _ => {
                self.put(off, block(buf, seq));
                return;
            }
        }
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
        self.put(off, block(buf, oldest));
        self.prune();
    }

    /// Continues the extent that ends at `off` with `data`, copied into the extent's
    /// buffer (which must have room) past the bytes anyone references. A dirty extent
    /// grows in place: no new block, heap entry or buffer reference, and it keeps its
    /// oldest unwritten seq. An extent being written cannot grow (its write op holds its
    /// length), so the bytes become a new dirty block with `seq` right after it in the
    /// same buffer, as packing does: a log's next commit group then needs no new chunk.
    /// Returns false (changing nothing) when no extent ends at `off` at its buffer's
    /// filled length with room, or when a block lies in `[off, off + len)`.
    pub(crate) fn try_extend(&mut self, off: u64, data: &[u8], seq: u64) -> bool {
        let len = data.len() as u64;
        // One descent: the last block starting before the new range's end. If it starts
        // inside the range, a block lies there; else it is the only one that can end at
        // `off` (blocks do not overlap).
        let Some((&bs, b)) = self.map.range_mut(..off + len).next_back() else {
            return false;
        };
        if bs >= off || bs + b.len != off || !b.at_fill() || b.buf.room() < data.len() {
            return false;
        }
        let at = b.buf.filled();
        // SAFETY: `&mut self` is the state lock, which serializes every append. The
        // block ends at its buffer's filled length, so the appended bytes lie past every
        // byte a block, a write op or a reader references.
        unsafe { b.buf.append(data) };
        if b.flushing.is_none() {
            b.len += len;
            debug_assert_eq!(b.buf_off + b.len as usize, b.buf.filled());
            self.dirty_bytes += len;
        } else {
            let buf = b.buf.clone();
            self.put(
                off,
                Block {
                    len,
                    buf,
                    buf_off: at,
                    seq,
                    flushing: None,
                },
            );
        }
        true
    }

    /// Whether the dirty extent at `start` can still grow in place (see `try_extend`).
    pub(crate) fn open_extent(&self, start: u64) -> bool {
        self.map
            .get(&start)
            .is_some_and(|b| b.extendable() && b.buf.room() > 0)
    }

    /// Checks the index's invariants (debug builds, and only while it is small enough for
    /// a full walk to stay cheap): blocks do not overlap and lie within their buffers'
    /// filled bytes, the dirty count and byte count match the blocks, and the top of the
    /// by-seq heap names the oldest dirty seq.
    pub(crate) fn check_invariants(&self) {
        #[cfg(debug_assertions)]
        if self.map.len() <= 256 {
            let mut prev_end = 0;
            let (mut dirty_count, mut dirty_bytes) = (0, 0);
            for (&s, b) in &self.map {
                assert!(s >= prev_end, "blocks overlap at {s}");
                prev_end = s + b.len;
                assert!(
                    b.buf_off + b.len as usize <= b.buf.filled(),
                    "block at {s} reaches past its buffer's filled bytes"
                );
                if b.flushing.is_none() {
                    dirty_count += 1;
                    dirty_bytes += b.len;
                }
            }
            assert_eq!(dirty_count, self.dirty_count, "dirty block count");
            assert_eq!(dirty_bytes, self.dirty_bytes, "dirty byte count");
            let oldest = self
                .map
                .values()
                .filter(|b| b.flushing.is_none())
                .map(|b| b.seq)
                .min();
            assert_eq!(self.min_dirty_seq(None), oldest, "by-seq heap top");
        }
    }

    /// Test hook: moves the block at `from` to start at `to`, changing nothing else (a
    /// corrupt index, for the tests of [`check_invariants`](Index::check_invariants)).
    #[cfg(test)]
    pub(crate) fn corrupt_move(&mut self, from: u64, to: u64) {
        let b = self.map.remove(&from).expect("a block starts at `from`");
        self.map.insert(to, b);
    }

    /// Test hook: marks the block at `start` as written by `op` behind the dirty
    /// count's back.
    #[cfg(test)]
    pub(crate) fn corrupt_flushing(&mut self, start: u64, op: usize) {
        self.map
            .get_mut(&start)
            .expect("a block starts at `start`")
            .flushing = Some(op);
    }

    /// Test hook: gives the block at `start` another seq behind the by-seq heap's back.
    #[cfg(test)]
    pub(crate) fn corrupt_seq(&mut self, start: u64, seq: u64) {
        self.map
            .get_mut(&start)
            .expect("a block starts at `start`")
            .seq = seq;
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

    /// Dirty block starts at or after `from`, in order (blocks in flight are passed
    /// over: a walk costs the blocks it passes, dirty or not; with nothing dirty there
    /// is no walk, so the passes while the last writes are in flight stay cheap).
    pub(crate) fn dirty_from(&self, from: u64) -> impl Iterator<Item = u64> + '_ {
        (self.dirty_count > 0)
            .then(|| self.map.range(from..))
            .into_iter()
            .flatten()
            .filter(|(_, b)| b.flushing.is_none())
            // No dirty block lies past the last one: stop there, not at the map's end.
            .take(self.dirty_count)
            .map(|(&s, _)| s)
    }

    /// The length of the dirty block starting exactly at `start`, if there is one.
    pub(crate) fn dirty_at(&self, start: u64) -> Option<u64> {
        self.map
            .get(&start)
            .filter(|b| b.flushing.is_none())
            .map(|b| b.len)
    }

    /// Marks the dirty block at `start` as being written by `op`.
    pub(crate) fn mark_flushing(&mut self, start: u64, op: usize) -> &Block {
        let b = self.map.get_mut(&start).expect("dirty block exists");
        debug_assert!(b.flushing.is_none(), "marked a block in flight again");
        self.dirty_count -= 1;
        self.dirty_bytes -= b.len;
        b.flushing = Some(op);
        self.prune();
        &self.map[&start]
    }

    /// Restores the invariant that the top of `dirty_by_seq` names a dirty block with
    /// that seq, and rebuilds the heap when stale entries outnumber live ones.
    fn prune(&mut self) {
        if self.dirty_by_seq.len() > 2 * self.dirty_count + 1024 {
            let live = self
                .map
                .iter()
                .filter(|(_, b)| b.flushing.is_none())
                .map(|(&s, b)| Reverse((b.seq, s)));
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

    /// Takes every block `op` is writing in `[off, end)` out of the map and hands it to
    /// `f` with its start. The starts are gathered a batch at a time on the stack: a
    /// completion allocates nothing (tests/no_alloc.rs) and walks its range once per batch.
    fn take_flushing_by(
        &mut self,
        op: usize,
        off: u64,
        end: u64,
        mut f: impl FnMut(&mut Self, u64, Block),
    ) {
        let mut from = off;
        loop {
            let mut batch = [0u64; 32];
            let mut n = 0;
            for (s, b) in self.overlapping(from, end) {
                if b.flushing == Some(op) {
                    batch[n] = s;
                    n += 1;
                    from = s + b.len;
                    if n == batch.len() {
                        break;
                    }
                }
            }
            for &s in &batch[..n] {
                let b = self.map.remove(&s).expect("just found");
                f(self, s, b);
            }
            if n < batch.len() {
                break;
            }
        }
    }

    /// `op` finished writing `[off, end)`: its blocks leave the index (their bytes are in
    /// the file now). Blocks rewritten meanwhile are newer and stay.
    pub(crate) fn complete(&mut self, op: usize, off: u64, end: u64) {
        self.take_flushing_by(op, off, end, |_, _, _| {});
    }

    /// `op` failed: its blocks become dirty again (and stay readable).
    pub(crate) fn unflush(&mut self, op: usize, off: u64, end: u64) {
        self.take_flushing_by(op, off, end, |index, s, mut b| {
            b.flushing = None;
            index.put(s, b);
        });
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
        assert!(index.dirty_by_seq.len() >= index.dirty_count);
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

    /// Extents against a byte model: random inserts (exact and chunk-sized buffers),
    /// packed inserts (windows of a shared packing buffer, which extents may grow into),
    /// in-place growth, sends, completions and failures. After every step the index over
    /// the "file" reads as the newest bytes; a write in flight still holds exactly the
    /// bytes it was sent with (growth never writes what an op references); an extent
    /// grows only when dirty; and the index's invariants hold.
    #[test]
    fn extents_grow_in_place_and_match_a_byte_model() {
        let pool = Pool::new(1 << 30, 1 << 20, 1);
        let mut index = Index::default();
        let mut newest: BTreeMap<u64, u8> = BTreeMap::new();
        let mut file = vec![0u8; 2200];
        // op -> (start, the bytes it was sent with)
        let mut flying: Vec<(usize, u64, Vec<u8>)> = Vec::new();
        let mut rng = Rng::new(0x5851_F42D_4C95_7F2D);
        let (mut grown, mut continued, mut last_end) = (0, 0, 0);
        let (mut packing, mut packed): (Option<BufRef>, u32) = (None, 0);
        for seq in 1..6000u64 {
            let x = rng.next();
            let byte = seq as u8;
            match x % 10 {
                0..=3 => {
                    // Continue the block ending at a random block's end, or anywhere.
                    let off = if x & 16 == 0 {
                        last_end
                    } else if x & 8 == 0 {
                        let s = index.dirty_from((x >> 8) % 2000).next();
                        s.map_or(0, |s| s + index.map[&s].len)
                    } else if x & 32 == 0 {
                        let s = index
                            .map
                            .keys()
                            .nth((x >> 8) as usize % index.map.len().max(1));
                        s.map_or(0, |s| s + index.map[s].len)
                    } else {
                        (x >> 8) % 2000
                    };
                    let len = 1 + (x >> 24) % 20;
                    // (ends at off, in flight, would have room for it)
                    let free = index.map.range(off..off + len).next().is_none();
                    let before =
                        index
                            .overlapping(off.saturating_sub(1), off)
                            .next()
                            .map(|(bs, b)| {
                                let at_fill = b.buf_off + b.len as usize == b.buf.filled();
                                let fits = free && at_fill && b.buf.room() >= len as usize;
                                (bs + b.len == off, b.flushing.is_some(), fits)
                            });
                    if index.try_extend(off, &vec![byte; len as usize], seq) {
                        let Some((true, in_flight, true)) = before else {
                            panic!("continued {before:?}: no extent ending at {off} with room");
                        };
                        if in_flight {
                            // A new block right after the one in flight, in its buffer.
                            assert_eq!(index.get(off).map(|b| (b.len, b.seq)), Some((len, seq)));
                            continued += 1;
                        } else {
                            grown += 1;
                        }
                        last_end = off + len;
                        for o in off..off + len {
                            newest.insert(o, byte);
                        }
                    } else {
                        assert!(
                            !matches!(before, Some((true, _, true))),
                            "refused to continue the extent ending at {off}"
                        );
                    }
                }
                4 => {
                    // One write in flight per byte range (the state machine's rule).
                    let next = index.dirty_from((x >> 8) % 2000).find(|&s| {
                        let e = s + index.get(s).unwrap().len;
                        !flying
                            .iter()
                            .any(|(_, fs, b)| *fs < e && s < fs + b.len() as u64)
                    });
                    if let Some(start) = next {
                        let b = index.mark_flushing(start, seq as usize);
                        let end = start + b.len;
                        let at_fill = b.buf_off + b.len as usize == b.buf.filled();
                        let room = b.buf.room() > 0;
                        flying.push((seq as usize, start, b.bytes().to_vec()));
                        if at_fill && room && index.map.range(end..end + 1).next().is_none() {
                            // In flight with room: continued as a new block past it.
                            assert!(index.try_extend(end, &[byte], seq), "not continued");
                            assert_eq!(index.get(start).unwrap().len, end - start);
                            newest.insert(end, byte);
                            last_end = end + 1;
                            continued += 1;
                        }
                    }
                }
                5 | 6 if !flying.is_empty() => {
                    let (op, s, sent) = flying.swap_remove((x >> 8) as usize % flying.len());
                    let e = s + sent.len() as u64;
                    if x & 32 == 0 {
                        file[s as usize..e as usize].copy_from_slice(&sent);
                        index.complete(op, s, e);
                    } else {
                        index.unflush(op, s, e);
                    }
                }
                _ if x & 192 == 64 && packing.as_ref().is_some_and(|p| p.room() >= 40) => {
                    // Packed: copied right after the packing buffer's filled bytes (which
                    // ops in flight and other blocks may reference), a block of its own.
                    let off = (x >> 8) % 2000;
                    let len = 1 + (x >> 24) % 40;
                    let p = packing.as_ref().unwrap();
                    let at = p.filled();
                    // SAFETY (test): one thread; appends only past the filled bytes.
                    unsafe { p.append(&vec![byte; len as usize]) };
                    index.insert_at(off, len, p.clone(), at, seq);
                    packed += 1;
                    last_end = off + len;
                    for o in off..off + len {
                        newest.insert(o, byte);
                    }
                }
                _ => {
                    let off = (x >> 8) % 2000;
                    let len = 1 + (x >> 24) % 40;
                    let (mut b, _) = if x & 192 != 0 {
                        pool.reserve_extent(len as usize, 256, 256, || {}).unwrap()
                    } else {
                        pool.reserve(len as usize, || {}).unwrap()
                    };
                    b.as_mut_slice().fill(byte);
                    if x & 192 == 64 {
                        // The new packing buffer.
                        packing = Some(b.clone());
                    }
                    index.insert(off, len, b, seq);
                    last_end = off + len;
                    for o in off..off + len {
                        newest.insert(o, byte);
                    }
                }
            }
            index.check_invariants();
            if seq % 5 != 0 {
                continue;
            }
            for (&o, &want) in &newest {
                let got = index
                    .overlapping(o, o + 1)
                    .next()
                    .map_or(file[o as usize], |(bs, b)| b.bytes()[(o - bs) as usize]);
                assert_eq!(got, want, "byte at {o}, step {seq}");
            }
            for (_, s, sent) in &flying {
                // The op's own view: its pieces still in the index show the sent bytes.
                for (bs, b) in index.overlapping(*s, s + sent.len() as u64) {
                    if b.flushing.is_some() && flying.iter().any(|(op, ..)| Some(*op) == b.flushing)
                    {
                        let (_, os, osent) = flying
                            .iter()
                            .find(|(op, ..)| Some(*op) == b.flushing)
                            .unwrap();
                        let at = (bs - os) as usize;
                        assert_eq!(
                            b.bytes(),
                            &osent[at..at + b.len as usize],
                            "in-flight bytes changed"
                        );
                    }
                }
            }
        }
        assert!(
            grown > 50 && continued > 2 && packed > 50,
            "grown {grown}, continued past a block in flight {continued}, packed {packed}"
        );
    }

    #[test]
    fn a_reader_copying_old_bytes_races_no_append() {
        // A reader holds the extent's buffer and copies its old bytes while the extent
        // grows past them (as `read_into` does outside the lock); the old bytes never
        // change and the new ones appear only through the filled length.
        let pool = Pool::new(1 << 24, 100, 1);
        let mut index = Index::default();
        let (mut b, _) = pool.reserve_extent(4096, 1 << 20, 1 << 20, || {}).unwrap();
        b.as_mut_slice().fill(1);
        index.insert(0, 4096, b, 1);
        let shared = index.get(0).unwrap().buf.shared();
        let reader = std::thread::spawn(move || {
            let mut copy = vec![0u8; 4096];
            for _ in 0..20_000 {
                copy.copy_from_slice(&shared.as_slice()[..4096]);
                assert!(
                    copy.iter().all(|&x| x == 1),
                    "old bytes changed under a reader"
                );
                let filled = shared.as_slice().len();
                assert!(filled % 4096 == 0);
                assert_eq!(shared.as_slice()[filled - 1], (filled / 4096) as u8);
            }
        });
        for page in 1..256u64 {
            let data = [(page as u8).wrapping_add(1); 4096];
            assert!(index.try_extend(page * 4096, &data, page + 1));
        }
        reader.join().unwrap();
        assert_eq!(index.len(), 1, "one block for the whole extent");
        assert_eq!(index.get(0).unwrap().len, 1 << 20);
        assert!(
            !index.try_extend(1 << 20, &[0; 4096], 300),
            "grew past its limit"
        );
        index.check_invariants();
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

    /// A write of more blocks than `complete` gathers in one batch, some of them
    /// rewritten while in flight: exactly the write's own blocks leave.
    #[test]
    fn a_long_run_completes_in_batches() {
        let pool = Pool::new(1 << 20, 1000, 1);
        let mut index = Index::default();
        let buf = |n: usize| pool.reserve(n, || {}).unwrap().0;
        for i in 0..100u64 {
            index.insert(i * 10, 10, buf(10), i + 1);
        }
        for i in 0..100u64 {
            index.mark_flushing(i * 10, 9);
        }
        for i in (0..100u64).step_by(7) {
            index.insert(i * 10, 10, buf(10), 200 + i);
        }
        index.complete(9, 0, 1000);
        let starts: Vec<u64> = index.map.keys().copied().collect();
        let rewritten: Vec<u64> = (0..100u64).step_by(7).map(|i| i * 10).collect();
        assert_eq!(starts, rewritten, "only the rewrites stay");
        assert_eq!(index.dirty_count(), rewritten.len());
        index.check_invariants();
    }
}
