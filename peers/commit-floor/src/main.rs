//! The floor of a group commit: `N` threads append 512-byte records to a shared log; each
//! group is exactly `N` records, and the thread whose record completes it leads: one `pwrite`
//! of the group's bytes and one `fdatasync`, then one `FUTEX_WAKE` of all. The others sleep
//! with `FUTEX_WAIT` on the count of durable groups until theirs is durable. The file is
//! zero-filled and synced beforehand, so no sync changes its size or allocates blocks.
//!
//! Nothing here can be left out by a library that acknowledges a commit only when it is
//! durable: per group one write and one sync, and per follower one sleep and one wake-up.
//! It gathers perfectly (N commits per sync), which no library can promise. So the process
//! CPU time per commit it prints is a floor for `writebehind bench --workload log --threads
//! N`'s CPU column (CPU s/GB × 512 B) on the same machine at the same minute.
//!
//! Usage: `commit-floor DIR [THREADS=8] [SECONDS=3]`

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RECORD: usize = 512;
const FILE_BYTES: u64 = 512 << 20;

struct Log {
    /// Bytes appended so far; `bytes[group_start..]` are the records of the open group.
    bytes: Vec<u8>,
    group_start: usize,
    /// Records in the open group.
    arrived: usize,
    /// The open group's number (it wraps; followers compare it for equality only).
    group: u32,
    commits: u64,
    syncs: u64,
}

struct Shared {
    log: Mutex<Log>,
    /// The number of groups made durable (wrapping): followers sleep on it with `FUTEX_WAIT`
    /// and the leader wakes them all with one `FUTEX_WAKE`, so a woken follower takes no
    /// lock on its way out.
    durable: AtomicU32,
    /// Set at the end: committers leave at their next record, and the followers of the
    /// group left open without waiting for it.
    stop: AtomicBool,
}

fn futex(word: &AtomicU32, op: libc::c_int, val: u32) {
    // SAFETY: `word` is a live, aligned 32-bit atomic for the duration of the call; no
    // timeout or second address is passed.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            val,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn process_cpu() -> Duration {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed value it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn committer(file: &File, shared: &Shared, threads: usize) {
    let record = [0x5au8; RECORD];
    let mut chunk = Vec::with_capacity(threads * RECORD);
    loop {
        let mut log = shared.log.lock().unwrap();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if log.bytes.len() + RECORD > FILE_BYTES as usize {
            log.bytes.clear();
            log.group_start = 0;
        }
        log.bytes.extend_from_slice(&record);
        let group = log.group;
        log.arrived += 1;
        if log.arrived < threads {
            drop(log);
            while shared.durable.load(Ordering::Acquire) != group.wrapping_add(1)
                && !shared.stop.load(Ordering::SeqCst)
            {
                futex(&shared.durable, libc::FUTEX_WAIT, group);
            }
            continue;
        }
        // The last record of the group: write and sync it outside the lock.
        let from = log.group_start;
        chunk.clear();
        chunk.extend_from_slice(&log.bytes[from..]);
        log.group_start = log.bytes.len();
        log.arrived = 0;
        log.group = group.wrapping_add(1);
        log.syncs += 1;
        log.commits += threads as u64;
        drop(log);
        file.write_all_at(&chunk, from as u64).expect("pwrite");
        file.sync_data().expect("fdatasync");
        shared
            .durable
            .store(group.wrapping_add(1), Ordering::Release);
        futex(&shared.durable, libc::FUTEX_WAKE, i32::MAX as u32);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .expect("usage: commit-floor DIR [THREADS] [SECONDS]");
    let threads: usize = args.get(2).map_or(8, |s| s.parse().expect("THREADS"));
    let secs: f64 = args.get(3).map_or(3.0, |s| s.parse().expect("SECONDS"));
    let path = std::path::Path::new(dir).join("commit-floor.dat");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("open");
    let zeros = vec![0u8; 1 << 20];
    for off in (0..FILE_BYTES).step_by(zeros.len()) {
        file.write_all_at(&zeros, off).expect("zero fill");
    }
    file.sync_all().expect("fsync");
    let file = Arc::new(file);
    let shared = Arc::new(Shared {
        log: Mutex::new(Log {
            bytes: Vec::with_capacity(FILE_BYTES as usize),
            group_start: 0,
            arrived: 0,
            group: 0,
            commits: 0,
            syncs: 0,
        }),
        durable: AtomicU32::new(0),
        stop: AtomicBool::new(false),
    });
    let (t0, cpu0) = (Instant::now(), process_cpu());
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (file, shared) = (file.clone(), shared.clone());
            std::thread::spawn(move || committer(&file, &shared, threads))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    shared.stop.store(true, Ordering::SeqCst);
    let (wall, cpu) = (t0.elapsed(), process_cpu() - cpu0);
    // The followers of the group left open never see it durable: wake them until all are
    // out (one may check `stop` just before it is set and sleep just after a wake-up).
    while workers.iter().any(|w| !w.is_finished()) {
        futex(&shared.durable, libc::FUTEX_WAKE, i32::MAX as u32);
        std::thread::sleep(Duration::from_millis(1));
    }
    for w in workers {
        w.join().unwrap();
    }
    let log = shared.log.lock().unwrap();
    println!(
        "commit-floor threads={threads}: {:.0} commits/s, {:.2} commits/sync, {:.2} us CPU/commit",
        log.commits as f64 / wall.as_secs_f64(),
        log.commits as f64 / log.syncs.max(1) as f64,
        cpu.as_secs_f64() * 1e6 / log.commits.max(1) as f64,
    );
    drop(log);
    let _ = std::fs::remove_file(&path);
}
