//! Crash test: every acknowledged `force` survives a `SIGKILL` at a random moment.
//!
//! The parent re-executes this test binary as a child (`crash_child`, `#[ignore]`d, chosen
//! by `--exact` and `WB_CRASH_*` variables). The child opens the file through a
//! `WriteBehindFile` and writes forever: page rewrites, multi-page writes and appends
//! (some through `write_buffer`/`append_buffer`), forcing every few operations with
//! `force` or `force_range`. Before each write it prints its *intent* (`W offset length
//! seed`: the bytes are `pattern(seed, length)`) to its stdout, a pipe; after each force
//! returns Ok it prints `F`. The parent kills the child with `SIGKILL` 20–150 ms after it
//! is ready (seeded: the seed is printed), reopens the file and checks every byte:
//! - a byte written by a write acknowledged by a later `F` must hold the newest
//!   acknowledged value;
//! - a byte also covered by writes not yet acknowledged may instead hold one of their
//!   values (they may or may not have reached the file), and nothing else.
//!
//! The file then stays as it is for the next child, which reopens it and continues. What
//! a SIGKILL can show: a `force` acknowledged before its writes were handed to the kernel
//! (buffered bytes die with the process). What it cannot show: a missing fsync (the
//! page cache survives a killed process); the fault tests check that fsyncs are issued and
//! their errors reported.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{big_block, pattern, small_block, Rng};
use writebehind::{Backend, Config, Handle, WriteBehindFile};

/// Kills per test.
const KILLS: usize = 20;
/// The child stops appending past this size and only rewrites, so files stay small.
const MAX_FILE: u64 = 4 << 20;
/// Protocol lines start with this (the test harness prints its own lines too).
const TAG: &str = "wbcrash ";

fn config(backend: Backend, direct: bool) -> Config {
    Config::default().backend(backend).direct_io(direct)
}

fn backend_by_name(name: &str) -> Backend {
    match name {
        "io_uring" => Backend::IoUring,
        "threads" => Backend::Threads,
        other => panic!("unknown backend {other}"),
    }
}

// ------------------------------------------------------------------ the child

/// The child: writes and forces until killed. Does nothing unless run by the parent.
#[test]
#[ignore = "child process of the crash tests"]
fn crash_child() {
    let Ok(path) = std::env::var("WB_CRASH_PATH") else {
        eprintln!("skipped: runs only as a child of the tests in tests/crash.rs");
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let backend = backend_by_name(&var("WB_CRASH_BACKEND"));
    let direct = var("WB_CRASH_DIRECT") == "1";
    let seed: u64 = var("WB_CRASH_SEED").parse().unwrap();
    let cfg = config(backend, direct);
    let path = Path::new(&path);
    let h = if path.exists() {
        WriteBehindFile::open(path, &cfg)
    } else {
        WriteBehindFile::create(path, &cfg)
    }
    .expect("open the crash file");
    let (unit, page) = (small_block(h.alignment()), big_block(h.alignment()));
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        // Written and flushed before the call it announces: a write whose bytes reach
        // the file is always known to the parent.
        out.write_all(format!("{TAG}{line}\n").as_bytes()).unwrap();
        out.flush().unwrap();
    };
    say(format!("S {}", h.end_position()));
    let mut rng = Rng::new(seed);
    loop {
        let (mut lo, mut hi) = (u64::MAX, 0);
        for _ in 0..rng.range(1, 8) {
            let end = h.end_position();
            let data_seed = rng.next();
            let pick = rng.below(100);
            let (off, len, append) = if end >= page as u64 && (pick < 40 || end >= MAX_FILE) {
                let p = rng.below(end / page as u64);
                (p * page as u64, page, false) // a page rewrite
            } else if end > 0 && pick < 60 {
                let off = rng.below(end) / unit as u64 * unit as u64;
                (
                    off,
                    unit * rng.range(1, 3 * page as u64 / unit as u64) as usize,
                    false,
                )
            } else {
                (
                    end,
                    unit * rng.range(1, 3 * page as u64 / unit as u64) as usize,
                    true,
                )
            };
            say(format!("W {off} {len} {data_seed}"));
            let data = pattern(data_seed, len);
            let via_buffer = rng.chance(25);
            match (append, via_buffer) {
                (false, false) => h.write(off, &data).unwrap(),
                (false, true) => {
                    let mut b = h.write_buffer(off, len).unwrap();
                    b.copy_from_slice(&data);
                    b.release().unwrap();
                }
                (true, false) => assert_eq!(h.append(&data).unwrap(), off),
                (true, true) => {
                    let mut b = h.append_buffer(len).unwrap();
                    assert_eq!(b.offset(), off);
                    b.copy_from_slice(&data);
                    drop(b); // commits
                }
            }
            lo = lo.min(off);
            hi = hi.max(off + len as u64);
        }
        if rng.chance(30) {
            h.force_range(lo, hi).unwrap();
        } else {
            h.force().unwrap();
        }
        say("F".into());
    }
}

// ------------------------------------------------------------------ the parent

/// A write the child announced.
struct Intent {
    off: u64,
    len: usize,
    seed: u64,
}

/// One child run: spawn, wait until ready, kill after `delay`, return its protocol lines.
fn run_child(path: &Path, backend: &str, direct: bool, seed: u64, delay: Duration) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WB_CRASH_PATH", path)
        .env("WB_CRASH_BACKEND", backend)
        .env("WB_CRASH_DIRECT", if direct { "1" } else { "0" })
        .env("WB_CRASH_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find(TAG) {
                let msg = line[at + TAG.len()..].to_string();
                if msg.starts_with('S') {
                    let _ = tx.send(());
                }
                lines.push(msg);
            }
        }
        lines
    });
    let stderr = child.stderr.take().unwrap();
    let errors = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let ready = rx.recv_timeout(Duration::from_secs(20));
    if ready.is_ok() {
        thread::sleep(delay);
    }
    let _ = child.kill(); // SIGKILL
    let status = child.wait().unwrap();
    let lines = reader.join().unwrap();
    let errors = errors.join().unwrap();
    assert!(
        ready.is_ok(),
        "the child never became ready ({status}); stderr:\n{errors}"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the child ended by itself ({status}) instead of being killed; stderr:\n{errors}"
    );
    lines
}

/// Checks the file against the acknowledged model and the announced writes; returns the
/// file's contents (the next round's starting point).
fn verify(path: &Path, cfg: &Config, model: &[u8], pending: &[Intent], what: &str) -> Vec<u8> {
    let h = WriteBehindFile::open(path, cfg).expect("reopen after the kill");
    let end = h.end_position();
    assert_eq!(end, std::fs::metadata(path).unwrap().len(), "{what}");
    assert!(
        end >= model.len() as u64,
        "{what}: file shrank to {end} bytes below the acknowledged {}",
        model.len()
    );
    let mut got = vec![0u8; end as usize];
    h.read(0, &mut got).unwrap();
    h.close().unwrap();
    // A byte is explained by the acknowledged model (zero past it), or by a write that
    // was announced but not acknowledged.
    let mut ok: Vec<bool> = got
        .iter()
        .enumerate()
        .map(|(i, &b)| b == model.get(i).copied().unwrap_or(0))
        .collect();
    for w in pending {
        let data = pattern(w.seed, w.len);
        let from = (w.off as usize).min(got.len());
        let to = (w.off as usize + w.len).min(got.len());
        for i in from..to {
            ok[i] |= got[i] == data[i - w.off as usize];
        }
    }
    if let Some(bad) = ok.iter().position(|&o| !o) {
        let covered = pending
            .iter()
            .any(|w| (w.off..w.off + w.len as u64).contains(&(bad as u64)));
        panic!(
            "{what}: byte {bad} is {} but the last acknowledged value is {} \
             (covered by an unacknowledged write: {covered}; {} bytes wrong in all)",
            got[bad],
            model.get(bad).copied().unwrap_or(0),
            ok.iter().filter(|&&o| !o).count()
        );
    }
    got
}

fn crash_loop(backend: &str, direct: bool) {
    let name = format!("crash {backend}{}", if direct { " direct" } else { "" });
    let seed = common::seed(&name);
    let mut rng = Rng::new(seed);
    let dir = common::tempdir();
    let path = dir.path().join("crash");
    let cfg = config(backend_by_name(backend), direct);
    let mut model: Vec<u8> = Vec::new();
    let (mut acks, mut in_doubt, started) = (0usize, 0usize, Instant::now());
    for kill in 0..KILLS {
        let delay = Duration::from_millis(rng.range(20, 150));
        let child_seed = rng.next();
        let lines = run_child(&path, backend, direct, child_seed, delay);
        let mut pending = Vec::new();
        for line in &lines {
            let mut f = line.split(' ');
            match f.next() {
                Some("W") => {
                    let mut num = || f.next().unwrap().parse::<u64>().unwrap();
                    let (off, len, seed) = (num(), num() as usize, num());
                    pending.push(Intent { off, len, seed });
                }
                Some("F") => {
                    for w in pending.drain(..) {
                        let end = w.off as usize + w.len;
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[w.off as usize..end].copy_from_slice(&pattern(w.seed, w.len));
                    }
                    acks += 1;
                }
                Some("S") => {
                    let at: u64 = f.next().unwrap().parse().unwrap();
                    assert!(
                        at >= model.len() as u64,
                        "{name}: the child started at {at}"
                    );
                }
                _ => panic!("{name}: bad protocol line {line:?}"),
            }
        }
        in_doubt += pending.len();
        let what =
            format!("{name}, kill {kill} after {delay:?} (seed {seed}, child seed {child_seed})");
        model = verify(&path, &cfg, &model, &pending, &what);
    }
    eprintln!(
        "{name}: {KILLS} kills, {acks} acknowledged forces checked, {in_doubt} writes in \
         flight at the kills, file {} bytes, {:?}",
        model.len(),
        started.elapsed()
    );
    assert!(
        acks >= KILLS,
        "{name}: only {acks} forces were acknowledged in {KILLS} runs: nothing was tested"
    );
}

#[test]
fn sigkill_never_loses_an_acknowledged_force_io_uring() {
    crash_loop("io_uring", false);
}

#[test]
fn sigkill_never_loses_an_acknowledged_force_threads() {
    crash_loop("threads", false);
}

#[test]
fn sigkill_never_loses_an_acknowledged_force_io_uring_direct() {
    crash_loop("io_uring", true);
}
