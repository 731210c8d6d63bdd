//! The least a write-behind does to acknowledge a page write, timed as the bench times
//! `write` (an `Instant` before and after), on the bench's `pages --direct` pattern: 4 KiB
//! pages at random page offsets of a 1 GiB file, a force every 1,000 writes.
//!
//! Per write: take the next 4 KiB slot of the current 64 KiB buffer (a new buffer from a
//! last-in-first-out free list every 16 writes), copy the page into it, and append
//! `(offset, buffer, slot)` to a list. No index, no lock, no statistics: a handle also has to
//! find the page again for reads, so it does at least this. A full buffer goes to one of 16
//! flusher threads, which writes its pages with `O_DIRECT` `pwrite`s and puts it back on the
//! free list (`BUFFERS` of them; by default 64 MiB, the library's default budget). A force
//! sends the partly filled buffer, waits until the flushers have written everything, and
//! `fdatasync`s.
//!
//! Usage: `ack-floor DIR [SECONDS=3] [BUFFERS=1024]`. Prints writes/s and the write time's
//! p50 and p99.

use std::alloc::{alloc, dealloc, Layout};
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
const BUFFER: usize = 64 << 10;
/// 64 KiB buffers by default: 64 MiB, the library's default budget.
const BUFFERS: usize = 1024;
const FILE_BYTES: u64 = 1 << 30;
const FORCE_EVERY: u64 = 1000;
/// Flusher threads: each writes one buffer's pages at a time, so up to this many writes are
/// in flight.
const FLUSHERS: usize = 16;

/// A 64 KiB buffer, page-aligned for `O_DIRECT`.
struct Buffer(*mut u8);
// SAFETY: a buffer is used by one thread at a time: the writer fills it, hands it to the
// flusher through a channel, and gets it back through the free list.
unsafe impl Send for Buffer {}

fn layout() -> Layout {
    Layout::from_size_align(BUFFER, PAGE).unwrap()
}

impl Buffer {
    fn new() -> Buffer {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc(layout()) };
        assert!(!p.is_null());
        Buffer(p)
    }
    fn slot(&mut self, i: usize) -> &mut [u8] {
        assert!(i < BUFFER / PAGE);
        // SAFETY: `i < BUFFER / PAGE`, so the slot lies inside the allocation.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(i * PAGE), PAGE) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `alloc(layout())` and is freed only here.
        unsafe { dealloc(self.0, layout()) };
    }
}

/// The xorshift generator the bench's writers use, for page offsets.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(args.get(1).expect("usage: ack-floor DIR [SECONDS]"));
    let secs: f64 = args.get(2).map_or(3.0, |s| s.parse().expect("SECONDS"));
    let buffers: usize = args.get(3).map_or(BUFFERS, |s| s.parse().expect("BUFFERS"));
    assert!(buffers >= 2, "BUFFERS: at least 2");
    let path = dir.join("ack-floor.dat");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("open");
    let mut zeros = Buffer::new();
    for i in 0..BUFFER / PAGE {
        zeros.slot(i).fill(0);
    }
    // SAFETY: the buffer is BUFFER bytes, all initialized just above.
    let zero_bytes = unsafe { std::slice::from_raw_parts(zeros.0, BUFFER) };
    for off in (0..FILE_BYTES).step_by(BUFFER) {
        file.write_all_at(zero_bytes, off).expect("zero fill");
    }
    file.sync_all().expect("fsync");
    let file = Arc::new(file);

    // The free list (LIFO), the flusher's queue of (buffer, page offsets), and its acks.
    let free = Arc::new(Mutex::new(
        (0..buffers).map(|_| Buffer::new()).collect::<Vec<_>>(),
    ));
    let (to_flush, flush_rx) = sync_channel::<(Buffer, Vec<u64>)>(buffers);
    let (flushed_tx, flushed) = channel::<()>();
    let flush_rx = Arc::new(Mutex::new(flush_rx));
    let flushers: Vec<_> = (0..FLUSHERS)
        .map(|_| {
            let (file, free, rx, done) = (
                file.clone(),
                free.clone(),
                flush_rx.clone(),
                flushed_tx.clone(),
            );
            std::thread::spawn(move || loop {
                let Ok((mut buf, offsets)) = rx.lock().unwrap().recv() else {
                    return;
                };
                for (i, off) in offsets.iter().enumerate() {
                    file.write_all_at(buf.slot(i), *off).expect("pwrite");
                }
                free.lock().unwrap().push(buf);
                let _ = done.send(());
            })
        })
        .collect();
    let take = || loop {
        if let Some(b) = free.lock().unwrap().pop() {
            return b;
        }
        std::thread::yield_now();
    };

    let mut page = vec![0xC0u8; PAGE];
    let mut rng = 0x5EED_u64;
    let mut times: Vec<u32> = Vec::with_capacity(1 << 22);
    let mut written: Vec<(u64, usize, usize)> = Vec::with_capacity(1 << 22);
    let (mut buf, mut offsets) = (take(), Vec::with_capacity(BUFFER / PAGE));
    let (mut sent, mut n) = (0u64, 0u64);
    let t_start = Instant::now();
    let deadline = t_start + Duration::from_secs_f64(secs);
    loop {
        page[..8].copy_from_slice(&n.to_le_bytes());
        let off = next(&mut rng) % (FILE_BYTES / PAGE as u64) * PAGE as u64;
        let t0 = Instant::now();
        if offsets.len() == BUFFER / PAGE {
            let full = std::mem::replace(&mut buf, take());
            to_flush.send((full, std::mem::take(&mut offsets))).unwrap();
            sent += 1;
        }
        let slot = offsets.len();
        buf.slot(slot).copy_from_slice(&page);
        offsets.push(off);
        written.push((off, sent as usize, slot));
        let t1 = Instant::now();
        times.push((t1 - t0).as_nanos().min(u32::MAX as u128) as u32);
        n += 1;
        if n % FORCE_EVERY == 0 {
            let part = std::mem::replace(&mut buf, take());
            to_flush.send((part, std::mem::take(&mut offsets))).unwrap();
            sent += 1;
            // Wait for every buffer sent so far, then sync.
            let mut done = 0;
            while done < sent {
                flushed.recv().unwrap();
                done += 1;
            }
            sent = 0;
            written.clear();
            file.sync_data().expect("fdatasync");
            if t1 >= deadline {
                break;
            }
        }
    }
    let wall = t_start.elapsed();
    drop(to_flush);
    for f in flushers {
        f.join().unwrap();
    }
    times.sort_unstable();
    let pick = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "ack-floor: {:.0} writes/s; write p50 {} ns, p99 {} ns ({} writes)",
        n as f64 / wall.as_secs_f64(),
        pick(0.5),
        pick(0.99),
        times.len()
    );
    let _ = std::fs::remove_file(&path);
}
