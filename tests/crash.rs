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
//! The child also calls `set_len` now and then (announced as `T length`), shrinking or
//! growing the file, and `truncate_start` (`P start`, which punches holes below the
//! start; nothing is promised about bytes below it, so the parent checks only above). After the kill the file's length must be one the child set or
//! wrote since its last acknowledged force (or the acknowledged length), and a byte past
//! a shrink may hold only zeros or a later write: data cut off never reappears.
//!
//! With preallocation (on by default) the file may also end with zero-filled space the
//! handle kept ready past its end, at most the 1 MiB window (and reads as zeros).
//!
//! The `*_engine_*` tests run [`crash_engine_child`] instead: four files on one `Engine`,
//! each written and forced as above by a thread of its own (protocol lines name their
//! file), and check every file after each kill.
//!
//! The file then stays as it is for the next child, which reopens it and continues. What
//! a SIGKILL can show: a `force` acknowledged before its writes were handed to the kernel
//! (buffered bytes die with the process). What it cannot show: a missing fsync (the
//! page cache survives a killed process); the fault tests check that fsyncs are issued and
//! their errors reported. A wrong byte is reported with the writes (round, offset, length,
//! acknowledged or not) whose bytes it holds.
//!
//! The reopen relies on `open` waiting for direct writes the killed child left in flight:
//! the kernel reaps a process before its io_uring direct writes land.
//! `open_waits_for_a_killed_writers_direct_io` checks that wait, with the child's writes
//! throttled by a blkio cgroup (`bulk_child`) so that they land long after its death;
//! where no cgroup can be made it runs unthrottled, a check that catches less.

mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::child::Intent;
use common::{big_block, pattern, small_block, Rng};
use writebehind::{Backend, Config, Engine, Handle, WriteBehindFile};

/// Kills per test (`WB_CRASH_KILLS` overrides).
const KILLS: usize = 20;
/// Kills per engine test (each checks [`ENGINE_FILES`] files).
const ENGINE_KILLS: usize = 10;
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

/// A child's start: the file's path, after joining the cgroup the parent named (if any)
/// so that all its I/O is throttled; `None` (printing why) when not run by a parent.
fn child_start() -> Option<String> {
    let Ok(path) = std::env::var("WB_CRASH_PATH") else {
        eprintln!("skipped: runs only as a child of the tests in tests/crash.rs");
        return None;
    };
    if let Ok(cgroup) = std::env::var("WB_CRASH_CGROUP") {
        std::fs::write(Path::new(&cgroup).join("cgroup.procs"), b"0").unwrap();
    }
    Some(path)
}

/// The child: writes and forces until killed. Does nothing unless run by the parent.
#[test]
#[ignore = "child process of the crash tests"]
fn crash_child() {
    let Some(path) = child_start() else { return };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let backend = backend_by_name(&var("WB_CRASH_BACKEND"));
    let direct = var("WB_CRASH_DIRECT") == "1";
    let seed: u64 = var("WB_CRASH_SEED").parse().unwrap();
    let cfg = config(backend, direct);
    let path = Path::new(&path);
    let h = common::retry_would_block(|| {
        if path.exists() {
            WriteBehindFile::open(path, &cfg)
        } else {
            WriteBehindFile::create(path, &cfg)
        }
    })
    .expect("open the crash file");
    write_forever(&h, 0, seed);
}

/// The child of the engine crash tests: [`ENGINE_FILES`] files (`WB_CRASH_PATH` with
/// the file's number appended) on one `Engine`, each written and forced by a thread of
/// its own, so that their forces meet in the engine's passes. Announces each file's
/// steps as [`crash_child`] does, each line naming its file.
#[test]
#[ignore = "child process of the crash tests"]
fn crash_engine_child() {
    let Some(path) = child_start() else { return };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let backend = backend_by_name(&var("WB_CRASH_BACKEND"));
    let direct = var("WB_CRASH_DIRECT") == "1";
    let seed: u64 = var("WB_CRASH_SEED").parse().unwrap();
    let cfg = config(backend, direct);
    let engine = Engine::new(&cfg.engine_config()).expect("start the engine");
    let files: Vec<WriteBehindFile> = (0..ENGINE_FILES)
        .map(|i| {
            let path = engine_file(Path::new(&path), i);
            common::retry_would_block(|| {
                if path.exists() {
                    engine.open(&path, &cfg.file_config())
                } else {
                    engine.create(&path, &cfg.file_config())
                }
            })
            .expect("open a crash file")
        })
        .collect();
    thread::scope(|s| {
        for (i, h) in files.iter().enumerate() {
            s.spawn(move || write_forever(h, i, seed ^ ((i as u64) << 48)));
        }
    });
}

/// Files of the engine crash tests.
const ENGINE_FILES: usize = 4;

/// The path of file `i` of the engine crash tests.
fn engine_file(path: &Path, i: usize) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{i}"));
    p.into()
}

/// Announces `line` about file `file` on stdout: `letter file rest`. Written and flushed
/// before the call it announces, so a write whose bytes reach the file is always known
/// to the parent; one line at a time, whichever thread says it.
fn say(file: usize, line: &str) {
    let (letter, rest) = line.split_at(1);
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{TAG}{letter} {file}{rest}\n").as_bytes())
        .unwrap();
    out.flush().unwrap();
}

/// Writes to `h` (announced as file `file`) and forces, until the process is killed.
fn write_forever(h: &WriteBehindFile, file: usize, seed: u64) {
    let (unit, page) = (small_block(h.alignment()), big_block(h.alignment()));
    let say = |line: String| say(file, &line);
    say(format!("S {}", h.end_position()));
    let mut rng = Rng::new(seed);
    loop {
        let (mut lo, mut hi) = (u64::MAX, 0);
        for _ in 0..rng.range(1, 8) {
            let end = h.end_position();
            let start = h.start_position();
            let up = |v: u64| v.div_ceil(unit as u64) * unit as u64;
            if rng.chance(3) && end > start {
                // A log dropping its head: the blocks below are punched.
                let to = rng.range(start, start + (end - start) / 4);
                say(format!("P {to}"));
                h.truncate_start(to).unwrap();
                continue;
            }
            if rng.chance(5) {
                let len = rng.range((end / 2).max(start), end + page as u64);
                let len = (len / unit as u64 * unit as u64).max(up(start));
                say(format!("T {len}"));
                h.set_len(len).unwrap();
                lo = lo.min(len);
                hi = hi.max(len + 1);
                continue;
            }
            let data_seed = rng.next();
            let pick = rng.below(100);
            let first_page = start.div_ceil(page as u64);
            let pages = end / page as u64;
            let (off, len, append) = if pages > first_page && (pick < 40 || end >= MAX_FILE) {
                let p = rng.range(first_page, pages - 1);
                (p * page as u64, page, false) // a page rewrite
            } else if up(start) < end && pick < 60 {
                let off = rng.range(up(start), end - 1) / unit as u64 * unit as u64;
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
        if rng.chance(30) && lo < hi {
            h.force_range(lo, hi).unwrap();
        } else {
            h.force().unwrap();
        }
        say("F".into());
    }
}

// ------------------------------------------------------------------ the parent

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Every write of every round, for explaining a wrong byte: (round, write, acknowledged).
type History = Vec<(usize, Intent, bool)>;

/// Which earlier writes put the 16 bytes at `at` there (a clue to what went wrong).
fn explain(history: &History, got: &[u8], at: usize) -> String {
    let want = &got[at..(at + 16).min(got.len())];
    let hits: Vec<String> = history
        .iter()
        .filter(|(_, w, _)| (w.off as usize..w.off as usize + w.len).contains(&at))
        .filter(|(_, w, _)| {
            let data = pattern(w.seed.expect("only writes cover bytes"), w.len);
            let from = at - w.off as usize;
            data[from..].iter().zip(want).all(|(a, b)| a == b)
        })
        .map(|(round, w, acked)| {
            let state = if *acked {
                "acknowledged"
            } else {
                "never acknowledged"
            };
            format!("round {round}: W {} {} ({state})", w.off, w.len)
        })
        .collect();
    if hits.is_empty() {
        "no announced write holds these bytes".into()
    } else {
        format!("they were written by {}", hits.join(", "))
    }
}

/// One run of the child test `name` (`crash_child` or `crash_engine_child`): spawn, wait
/// until ready, kill after `delay`, return its protocol lines.
fn run_child(
    name: &str,
    path: &Path,
    (backend, direct): (&str, bool),
    throttle: Option<&Throttle>,
    seed: u64,
    delay: Duration,
) -> Vec<String> {
    let env = [
        ("WB_CRASH_BACKEND", backend),
        ("WB_CRASH_DIRECT", if direct { "1" } else { "0" }),
    ];
    run_named_child(name, path, &env, throttle, seed, delay)
}

/// [`run_child`] for the child test `name`, with extra environment `env`.
fn run_named_child(
    name: &str,
    path: &Path,
    env: &[(&str, &str)],
    throttle: Option<&Throttle>,
    seed: u64,
    delay: Duration,
) -> Vec<String> {
    let mut env: Vec<(&str, String)> = env.iter().map(|&(k, v)| (k, v.to_string())).collect();
    env.push(("WB_CRASH_PATH", path.display().to_string()));
    env.push(("WB_CRASH_SEED", seed.to_string()));
    if let Some(t) = throttle {
        env.push(("WB_CRASH_CGROUP", t.0.display().to_string()));
    }
    let mut child = common::child::spawn(name, &env, TAG);
    let ready = child.wait_ready(Duration::from_secs(20));
    if ready {
        thread::sleep(delay);
    }
    child.kill(); // SIGKILL
    let ended = child.wait();
    let (status, errors) = (ended.status, ended.stderr);
    assert!(
        ready,
        "the child never became ready ({status}); stderr:\n{errors}"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the child ended by itself ({status}) instead of being killed; stderr:\n{errors}"
    );
    ended.lines
}

/// Checks the file against the acknowledged model and the announced writes; returns the
/// file's contents (the next round's starting point).
fn verify(
    path: &Path,
    cfg: &Config,
    model: &[u8],
    pending: &[Intent],
    history: &History,
    dropped_below: u64,
    what: &str,
) -> Vec<u8> {
    let h = common::retry_would_block(|| WriteBehindFile::open(path, cfg))
        .expect("reopen after the kill");
    let end = h.end_position();
    assert_eq!(end, std::fs::metadata(path).unwrap().len(), "{what}");
    // Every length the steps since the last acknowledged force may have left.
    let mut lengths = vec![(model.len() as u64, model.len() as u64)];
    for w in pending {
        let before = lengths.clone();
        lengths.extend(before.into_iter().map(|l| w.lengths_after(l)));
        lengths.sort_unstable();
        lengths.dedup();
    }
    // Preallocation may leave zero-filled space past it (the bytes are checked below).
    let window = 1 << 20;
    assert!(
        lengths
            .iter()
            .any(|&(lo, hi)| (lo..=align_up(hi + window, 4096)).contains(&end)),
        "{what}: file length {end} is none that was set or written (acknowledged {}, \
         possible {lengths:?})",
        model.len()
    );
    // Bytes past a pending shrink may be zeros even where the model has data.
    let cut = pending
        .iter()
        .filter(|w| w.seed.is_none())
        .map(|w| w.off as usize)
        .min()
        .unwrap_or(usize::MAX);
    let mut got = vec![0u8; end as usize];
    h.read(0, &mut got).unwrap();
    h.close().unwrap();
    // A byte is explained by the acknowledged model (zero past it), or by a write that
    // was announced but not acknowledged.
    let mut ok: Vec<bool> = got
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            (i as u64) < dropped_below
                || b == model.get(i).copied().unwrap_or(0)
                || (i >= cut && b == 0)
        })
        .collect();
    for w in pending {
        w.allow(&got, &mut ok);
    }
    if let Some(bad) = ok.iter().position(|&o| !o) {
        let covered = pending.iter().any(|w| w.covers(bad as u64));
        panic!(
            "{what}: byte {bad} is {} but the last acknowledged value is {} \
             (covered by an unacknowledged write: {covered}; {} bytes wrong in all, \
             from {} to {}); {}",
            got[bad],
            model.get(bad).copied().unwrap_or(0),
            ok.iter().filter(|&&o| !o).count(),
            bad,
            ok.iter().rposition(|&o| !o).expect("one is wrong"),
            explain(history, &got, bad)
        );
    }
    got
}

/// `throttle_bps`: run the children with their writes throttled to that many bytes per
/// second (a slow device), when a cgroup can be made.
fn crash_loop(backend: &str, direct: bool, throttle_bps: Option<u64>) {
    crash_loop_in(None, backend, direct, throttle_bps, None, false);
}

/// [`crash_loop`] with [`ENGINE_FILES`] files on one `Engine` in the child
/// ([`crash_engine_child`]), `kills` kills: every file is checked after each.
fn engine_crash_loop(backend: &str, direct: bool, kills: usize) {
    crash_loop_in(None, backend, direct, None, Some(kills), true);
}

/// [`crash_loop`] on a fresh loop-mounted file system of `fstype` (with `kills` kills).
fn crash_loop_on(fstype: &'static str, bytes: u64, backend: &str, direct: bool, kills: usize) {
    let what = format!("crash on {fstype}");
    let Some(fs) = common::loopfs::loop_fs(&what, fstype, bytes) else {
        return;
    };
    crash_loop_in(
        Some((fstype, &fs.mnt())),
        backend,
        direct,
        None,
        Some(kills),
        false,
    );
}

/// What the parent knows of one file: the bytes it holds after the last check with the
/// acknowledged steps since applied, every write announced, and, since the last kill, the
/// steps not acknowledged yet and how far its head was dropped.
#[derive(Default)]
struct Known {
    model: Vec<u8>,
    history: History,
    pending: Vec<Intent>,
    dropped_below: u64,
}

impl Known {
    /// Takes one protocol line about this file (`letter`, then `fields`) of the child run
    /// `kill`; returns whether it acknowledged a force.
    fn take<'a>(
        &mut self,
        kill: usize,
        letter: &str,
        mut f: impl Iterator<Item = &'a str>,
        what: &str,
    ) -> bool {
        match letter {
            "W" => {
                let w = Intent::parse(f);
                self.history.push((kill, w.clone(), false));
                self.pending.push(w);
            }
            "P" => {
                let to = f.next().unwrap().parse::<u64>().unwrap();
                self.dropped_below = self.dropped_below.max(to);
            }
            "T" => {
                let off = f.next().unwrap().parse::<u64>().unwrap();
                let t = Intent::set_len(off);
                self.pending.push(t.clone());
                self.history.push((kill, t, false));
            }
            "F" => {
                let n = self.pending.len();
                for (_, _, acked) in self.history.iter_mut().rev().take(n) {
                    *acked = true;
                }
                for w in self.pending.drain(..) {
                    w.apply(&mut self.model);
                }
                return true;
            }
            "S" => {
                let at: u64 = f.next().unwrap().parse().unwrap();
                assert!(
                    at >= self.model.len() as u64,
                    "{what}: the child started at {at}"
                );
            }
            _ => panic!("{what}: bad protocol line {letter} ..."),
        }
        false
    }

    /// Checks the file at `path` after a kill (see [`verify`]) and starts the next run
    /// from what it holds.
    fn check(&mut self, path: &Path, cfg: &Config, what: &str) -> usize {
        let in_doubt = self.pending.len();
        self.model = verify(
            path,
            cfg,
            &self.model,
            &self.pending,
            &self.history,
            self.dropped_below,
            what,
        );
        self.pending.clear();
        self.dropped_below = 0;
        in_doubt
    }
}

/// The loop itself, in a temp dir under `on` (a file system's name and mount point) or
/// under target/tmp; with `engine`, the child runs [`ENGINE_FILES`] files on one engine.
fn crash_loop_in(
    on: Option<(&str, &Path)>,
    backend: &str,
    direct: bool,
    throttle_bps: Option<u64>,
    kills: Option<usize>,
    engine: bool,
) {
    let name = format!(
        "crash {backend}{}{}{}{}",
        if engine { " engine" } else { "" },
        on.map(|(fs, _)| format!(" on {fs}")).unwrap_or_default(),
        if direct { " direct" } else { "" },
        if throttle_bps.is_some() {
            " throttled"
        } else {
            ""
        }
    );
    let seed = common::seed(&name);
    let mut rng = Rng::new(seed);
    let dir = match on {
        Some((_, mnt)) => tempfile::tempdir_in(mnt).unwrap(),
        None => common::tempdir(),
    };
    let path = dir.path().join("crash");
    let paths: Vec<_> = if engine {
        (0..ENGINE_FILES).map(|i| engine_file(&path, i)).collect()
    } else {
        vec![path.clone()]
    };
    let throttle = throttle_bps.and_then(|bps| Throttle::or_say_why(dir.path(), bps, &name));
    let cfg = config(backend_by_name(backend), direct);
    let mut files: Vec<Known> = paths.iter().map(|_| Known::default()).collect();
    let (mut acks, mut in_doubt, started) = (0usize, 0usize, Instant::now());
    let kills =
        std::env::var("WB_CRASH_KILLS").map_or(kills.unwrap_or(KILLS), |k| k.parse().unwrap());
    for kill in 0..kills {
        let delay = Duration::from_millis(rng.range(20, 150));
        let child_seed = rng.next();
        let lines = run_child(
            if engine {
                "crash_engine_child"
            } else {
                "crash_child"
            },
            &path,
            (backend, direct),
            throttle.as_ref(),
            child_seed,
            delay,
        );
        for line in &lines {
            let mut f = line.split(' ');
            let letter = f.next().unwrap_or_default();
            let file: usize = f.next().and_then(|i| i.parse().ok()).unwrap_or(usize::MAX);
            let known = files
                .get_mut(file)
                .unwrap_or_else(|| panic!("{name}: bad protocol line {line:?}"));
            acks += usize::from(known.take(kill, letter, f, &name));
        }
        for (i, (known, path)) in files.iter_mut().zip(&paths).enumerate() {
            let what = format!(
                "{name}, file {i}, kill {kill} after {delay:?} (seed {seed}, child seed \
                 {child_seed})"
            );
            in_doubt += known.check(path, &cfg, &what);
        }
    }
    let bytes: Vec<usize> = files.iter().map(|k| k.model.len()).collect();
    eprintln!(
        "{name}: {kills} kills, {acks} acknowledged forces checked, {in_doubt} writes in \
         flight at the kills, files of {bytes:?} bytes, {:?}",
        started.elapsed()
    );
    // A kill can land before a slow child (a loaded machine, a fresh loop-mounted file
    // system) acknowledged anything; half the kills with a force each still test a lot.
    assert!(
        acks >= kills.div_ceil(2),
        "{name}: only {acks} forces were acknowledged in {kills} runs: too little was tested"
    );
    if engine {
        // Every file of the engine was written and forced, not only the first.
        let per_file: Vec<usize> = files
            .iter()
            .map(|k| k.history.iter().filter(|(_, _, acked)| *acked).count())
            .collect();
        assert!(
            per_file.iter().all(|&n| n > 0),
            "{name}: acknowledged writes per file {per_file:?}: a file was never tested"
        );
    }
}

#[test]
fn sigkill_never_loses_an_acknowledged_force_io_uring() {
    crash_loop("io_uring", false, None);
}

#[test]
fn sigkill_never_loses_an_acknowledged_force_threads() {
    crash_loop("threads", false, None);
}

#[test]
fn sigkill_never_loses_an_acknowledged_force_io_uring_direct() {
    crash_loop("io_uring", true, None);
}

/// Four files on one `Engine` in the child, each written and forced by its own thread:
/// every acknowledged force is intact in every file after each kill.
#[test]
fn sigkill_never_loses_an_acknowledged_force_engine_io_uring() {
    engine_crash_loop("io_uring", false, ENGINE_KILLS);
}

#[test]
fn sigkill_never_loses_an_acknowledged_force_engine_io_uring_direct() {
    engine_crash_loop("io_uring", true, ENGINE_KILLS);
}

#[test]
fn sigkill_never_loses_an_acknowledged_force_engine_threads() {
    engine_crash_loop("threads", false, ENGINE_KILLS);
}

/// On a journaled ext4 and on XFS (loop-mounted images), where preallocation, hole
/// punching and `set_len` meet a journal: root and `mkfs` needed (a failure under CI).
#[test]
fn sigkill_never_loses_an_acknowledged_force_on_journaled_ext4() {
    crash_loop_on("ext4", 64 << 20, "io_uring", false, 10);
    crash_loop_on("ext4", 64 << 20, "io_uring", true, 10);
}

#[test]
fn sigkill_never_loses_an_acknowledged_force_on_xfs() {
    // mkfs.xfs refuses file systems under 300 MiB; the image is sparse.
    crash_loop_on("xfs", 320 << 20, "io_uring", false, 10);
    crash_loop_on("xfs", 320 << 20, "threads", true, 10);
}

/// The same on a slow device: the children's writes are throttled to 4 MiB/s, so those
/// a killed child leaves in flight land long after its death. (It failed in 4 runs of 4,
/// within 15 kills, before `open` waited for them.)
#[test]
fn sigkill_never_loses_an_acknowledged_force_io_uring_direct_throttled() {
    crash_loop("io_uring", true, Some(4 << 20));
}

// ------------------------------------------- a dead writer's I/O has landed at open

/// The file the bulk child rewrites, in blocks of [`BULK_BLOCK`].
const BULK_FILE: u64 = 16 << 20;
const BULK_BLOCK: usize = 1 << 20;
/// The child's direct writes are throttled to this many bytes per second, so that the
/// writes it leaves in flight take a good fraction of a second to land.
const BULK_BPS: u64 = 16 << 20;

/// The child of `open_waits_for_a_killed_writers_direct_io`: rewrites the file in 1 MiB
/// direct writes as fast as the handle takes them, never forcing, so that megabytes are in
/// flight when it is killed.
#[test]
#[ignore = "child process of the crash tests"]
fn bulk_child() {
    let Some(path) = child_start() else { return };
    let seed: u64 = std::env::var("WB_CRASH_SEED").unwrap().parse().unwrap();
    let cfg = config(Backend::IoUring, true).buffer_bytes(8 << 20);
    let h = WriteBehindFile::open(&path, &cfg).unwrap();
    println!("{TAG}S {}", h.end_position());
    let mut rng = Rng::new(seed);
    let data = pattern(seed, BULK_BLOCK);
    loop {
        let block = rng.below(BULK_FILE / BULK_BLOCK as u64);
        h.write(block * BULK_BLOCK as u64, &data).unwrap();
    }
}

/// A cgroup (v1 blkio) whose direct writes to one disk are throttled; removed on drop.
struct Throttle(std::path::PathBuf);

impl Throttle {
    /// Throttles writes to the disk holding `file` to `bps`, or says why it cannot.
    fn new(file: &Path, bps: u64) -> Result<Self, String> {
        use std::os::unix::fs::MetadataExt;
        let root = Path::new("/sys/fs/cgroup/blkio");
        if !root.join("blkio.throttle.write_bps_device").exists() {
            return Err(format!(
                "no cgroup v1 blkio throttling at {}",
                root.display()
            ));
        }
        let dev = std::fs::metadata(file).map_err(|e| e.to_string())?.dev();
        let mut disk = format!("{}:{}", libc::major(dev), libc::minor(dev));
        // Throttling is per disk: a partition's settings go to its parent disk.
        let sys = Path::new("/sys/dev/block").join(&disk);
        if sys.join("partition").exists() {
            disk = std::fs::read_to_string(sys.join("../dev"))
                .map_err(|e| format!("parent disk of {disk}: {e}"))?
                .trim()
                .to_string();
        }
        // One cgroup per throttle: tests of one process run in parallel.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.join(format!("writebehind-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cg = Throttle(dir);
        std::fs::write(
            cg.0.join("blkio.throttle.write_bps_device"),
            format!("{disk} {bps}"),
        )
        .map_err(|e| format!("throttling {disk}: {e}"))?;
        Ok(cg)
    }
}

impl Throttle {
    /// [`Throttle::new`], or `None` after printing why the test runs unthrottled.
    fn or_say_why(file: &Path, bps: u64, what: &str) -> Option<Self> {
        Throttle::new(file, bps)
            .inspect_err(|why| eprintln!("{what}: writes not throttled, a weaker check: {why}"))
            .ok()
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        // Empty by now: its only member, the child, is dead.
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A process killed with io_uring direct writes in flight is reaped before they land
/// (measured on Linux 6.18: with 16-64 MiB in flight, bytes changed after `wait()` in a
/// third of the kills, in nearly all with the writes throttled). `open` must wait for
/// them, or what a successor reads changes under it and what it writes may be overwritten
/// by older bytes. The child's writes are throttled so that they land up to half a
/// second after its death; the file is opened right after the kill and must not change
/// once `open` has returned.
#[test]
fn open_waits_for_a_killed_writers_direct_io() {
    let what = "open_waits_for_a_killed_writers_direct_io";
    let seed = common::seed(what);
    let mut rng = Rng::new(seed);
    let dir = common::tempdir();
    let path = dir.path().join("bulk");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all_at(&vec![0u8; BULK_FILE as usize], 0)
        .unwrap();
    // Allocated, so the child's writes are plain overwrites.
    file.sync_all().unwrap();
    // Without a cgroup the check still runs, but catches a missing wait only in some
    // kills (a third, measured), not nearly all.
    let throttle = Throttle::or_say_why(&path, BULK_BPS, what);
    let read_all = || {
        let mut got = vec![0u8; BULK_FILE as usize];
        file.read_exact_at(&mut got, 0).unwrap();
        got
    };
    for kill in 0..3 {
        let delay = Duration::from_millis(rng.range(100, 200));
        run_named_child(
            "bulk_child",
            &path,
            &[],
            throttle.as_ref(),
            rng.next(),
            delay,
        );
        WriteBehindFile::open(&path, &config(Backend::IoUring, true))
            .expect("open after the kill")
            .close()
            .unwrap();
        let at_open = read_all();
        thread::sleep(Duration::from_millis(300));
        let changed = at_open
            .iter()
            .zip(read_all())
            .filter(|(a, b)| **a != *b)
            .count();
        assert_eq!(
            changed, 0,
            "kill {kill} (seed {seed}): {changed} bytes changed after open returned"
        );
    }
}
