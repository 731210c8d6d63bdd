//! B's commit latency under A's flood, with A written two ways:
//!
//! - `plain`: A's writer `pwrite`s each 4 KiB block into the page cache itself, as the
//!   bench's `pwrite` backend does.
//! - `behind`: the least a write-behind of a buffered file does. A's writer copies each block
//!   into 1 MiB chunks (64 of them, 64 MiB, as the library's default budget) and returns; one
//!   flusher thread `pwrite`s each full chunk into the page cache, `PIECE` bytes at a time,
//!   and hands it back. The writer waits only when all 64 are full. Its writes/s count the
//!   blocks copied, up to 64 MiB of which may not have reached the page cache at the end.
//!
//! - `spin`: no A at all; `N` threads burn CPU (a counting loop, no memory traffic, no
//!   I/O). It isolates what two busy CPUs alone cost B's commits.
//!
//! In each, B appends a 4 KiB page with `pwrite` and `fdatasync`s it in a loop; each
//! `fdatasync` is timed, as the bench times B's `force`. A is 1 GiB, zero-filled beforehand
//! and written sequentially, wrapping; B starts empty.
//!
//! Usage: `flood-floor DIR plain|behind|spin [SECONDS=3] [PIECE=1048576|N=2]
//! [normal|idle]`. For `behind`, `PIECE` is the size of each of the flusher's `pwrite`s (a
//! chunk is written in pieces); for `spin`, `N` is the number of spinning threads. The last
//! word sets the scheduling policy of the flusher (`behind`) or the spinners (`spin`):
//! `normal` (`SCHED_OTHER`, the default) or `idle` (`SCHED_IDLE`: they run only when no
//! normal thread wants the CPU). Prints A's writes/s (0 for `spin`) and B's `fdatasync`
//! p50, p99 and count.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLOCK: usize = 4096;
const CHUNK: usize = 1 << 20;
const CHUNKS: usize = 64;
const A_BYTES: u64 = 1 << 30;

fn create(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("open")
}

/// A's writer, `plain`: one `pwrite` per block. Returns the blocks written.
fn plain_writer(a: &File, stop: &AtomicBool) -> u64 {
    let mut block = vec![0xA0u8; BLOCK];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        block[..8].copy_from_slice(&n.to_le_bytes());
        a.write_all_at(&block, n * BLOCK as u64 % A_BYTES)
            .expect("pwrite A");
        n += 1;
    }
    n
}

/// A's writer, `behind`: copies blocks into chunks from `free` and sends each full chunk,
/// with its file offset, to the flusher. Returns the blocks written.
fn behind_writer(
    free: &Receiver<Vec<u8>>,
    full: &SyncSender<(Vec<u8>, u64)>,
    stop: &AtomicBool,
) -> u64 {
    let mut block = vec![0xA0u8; BLOCK];
    let mut n = 0u64;
    let mut chunk = free.recv().expect("a free chunk");
    while !stop.load(Ordering::Relaxed) {
        block[..8].copy_from_slice(&n.to_le_bytes());
        chunk.extend_from_slice(&block);
        n += 1;
        if chunk.len() == CHUNK {
            let at = (n * BLOCK as u64 - CHUNK as u64) % A_BYTES;
            full.send((chunk, at)).expect("flusher alive");
            chunk = free.recv().expect("a free chunk");
        }
    }
    n
}

/// The write-behind's flusher: writes each full chunk, `piece` bytes per `pwrite`, and
/// returns it emptied.
fn flusher(a: &File, full: &Receiver<(Vec<u8>, u64)>, free: &SyncSender<Vec<u8>>, piece: usize) {
    for (mut chunk, at) in full.iter() {
        for (i, p) in chunk.chunks(piece).enumerate() {
            a.write_all_at(p, at + (i * piece) as u64)
                .expect("pwrite A piece");
        }
        chunk.clear();
        if free.send(chunk).is_err() {
            return;
        }
    }
}

/// B: append a page and `fdatasync` it, until `stop`. Returns each sync's time.
/// Puts the calling thread under `SCHED_IDLE` (the flusher or a spinner, with `idle`).
fn become_idle() {
    #[repr(C)]
    struct SchedParam {
        sched_priority: i32,
    }
    extern "C" {
        fn sched_setscheduler(pid: i32, policy: i32, param: *const SchedParam) -> i32;
    }
    const SCHED_IDLE: i32 = 5;
    let param = SchedParam { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call's
    // duration (SCHED_IDLE requires priority 0).
    let rc = unsafe { sched_setscheduler(0, SCHED_IDLE, &param) };
    assert_eq!(rc, 0, "sched_setscheduler(SCHED_IDLE)");
}

/// Burns CPU until `stop`: a counting loop that touches no memory and makes no syscall.
fn spinner(stop: &AtomicBool, sink: &AtomicU64) {
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..100_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
    }
    sink.fetch_add(x, Ordering::Relaxed);
}

fn committer(b: &File, stop: &AtomicBool) -> Vec<Duration> {
    let page = vec![0xB0u8; BLOCK];
    let mut times = Vec::with_capacity(1 << 16);
    let mut end = 0u64;
    while !stop.load(Ordering::Relaxed) {
        b.write_all_at(&page, end).expect("pwrite B");
        end += BLOCK as u64;
        let t0 = Instant::now();
        b.sync_data().expect("fdatasync B");
        times.push(t0.elapsed());
    }
    times
}

fn policy(idle: bool) -> &'static str {
    if idle {
        "idle"
    } else {
        "normal"
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: flood-floor DIR plain|behind|spin [SECONDS] [PIECE|N] [normal|idle]";
    let dir = Path::new(args.get(1).expect(usage));
    let mode = args.get(2).map(String::as_str);
    let (behind, spin) = match mode {
        Some("plain") => (false, false),
        Some("behind") => (true, false),
        Some("spin") => (false, true),
        _ => panic!("{usage}"),
    };
    let secs: f64 = args.get(3).map_or(3.0, |s| s.parse().expect("SECONDS"));
    // The fourth word is the flusher's piece size for `behind`, the spinner count for `spin`.
    let fourth: Option<usize> = args.get(4).map(|s| s.parse().expect("PIECE or N"));
    let (piece, spinners) = if spin {
        (CHUNK, fourth.unwrap_or(2))
    } else {
        (fourth.unwrap_or(CHUNK), 0)
    };
    assert!((BLOCK..=CHUNK).contains(&piece), "PIECE in 4096..=1048576");
    let idle = match args.get(5).map(String::as_str) {
        None | Some("normal") => false,
        Some("idle") => true,
        _ => panic!("{usage}"),
    };
    let (a_path, b_path) = (dir.join("flood-floor-a.dat"), dir.join("flood-floor-b.dat"));
    let a = Arc::new(create(&a_path));
    if !spin {
        let zeros = vec![0u8; CHUNK];
        for off in (0..A_BYTES).step_by(CHUNK) {
            a.write_all_at(&zeros, off).expect("zero fill A");
        }
    }
    a.sync_all().expect("fsync A");
    let b = create(&b_path);
    let stop = Arc::new(AtomicBool::new(false));

    let t0 = Instant::now();
    let writer = {
        let (a, stop) = (a.clone(), stop.clone());
        if spin {
            std::thread::spawn(move || {
                let sink = Arc::new(AtomicU64::new(0));
                let threads: Vec<_> = (0..spinners)
                    .map(|_| {
                        let (stop, sink) = (stop.clone(), sink.clone());
                        std::thread::spawn(move || {
                            if idle {
                                become_idle();
                            }
                            spinner(&stop, &sink)
                        })
                    })
                    .collect();
                for t in threads {
                    t.join().unwrap();
                }
                0
            })
        } else if behind {
            let (free_tx, free_rx) = sync_channel::<Vec<u8>>(CHUNKS);
            let (full_tx, full_rx) = sync_channel::<(Vec<u8>, u64)>(CHUNKS);
            for _ in 0..CHUNKS {
                free_tx.send(Vec::with_capacity(CHUNK)).unwrap();
            }
            let fa = a.clone();
            let flush = std::thread::spawn(move || {
                if idle {
                    become_idle();
                }
                flusher(&fa, &full_rx, &free_tx, piece)
            });
            std::thread::spawn(move || {
                let n = behind_writer(&free_rx, &full_tx, &stop);
                drop((full_tx, free_rx));
                flush.join().unwrap();
                n
            })
        } else {
            std::thread::spawn(move || plain_writer(&a, &stop))
        }
    };
    let b_stop = stop.clone();
    let b_thread = std::thread::spawn(move || committer(&b, &b_stop));
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut times = b_thread.join().unwrap();
    let a_writes = writer.join().unwrap();
    let wall = t0.elapsed();
    times.sort();
    let pick = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "flood-floor {}: A {:.0} writes/s; B fdatasync p50 {:.0} us, p99 {:.0} us, {} syncs",
        match (spin, behind, idle) {
            (true, _, i) => format!("spin, {spinners} {} threads", policy(i)),
            (_, true, i) => format!("behind, {piece} B pieces, {} flusher", policy(i)),
            _ => "plain".to_string(),
        },
        a_writes as f64 / wall.as_secs_f64(),
        pick(0.5),
        pick(0.99),
        times.len(),
    );
    let _ = std::fs::remove_file(&a_path);
    let _ = std::fs::remove_file(&b_path);
}
