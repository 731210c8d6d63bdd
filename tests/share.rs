//! Isolation of files on one `Engine`: a force on file B never waits for file A's
//! write-back, and a file flooding writes on a small shared budget cannot starve another
//! file's writers (the pool's own rules are tested in `src/wb/pool.rs`).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use writebehind::{Backend, Engine, EngineConfig, FileConfig, Handle};

/// Runs `f` on a thread; its result, or a test failure (not a hang) after 60 s.
fn within_60s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(f()));
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
}

/// A FIFO opened read-write: writes to it block once its 64 KiB buffer is full, until
/// someone reads, so a write-back to it stays in flight as long as the test wants.
fn fifo(dir: &std::path::Path) -> (File, File) {
    let path = dir.join("a.fifo");
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let w = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let r = File::open(&path).unwrap();
    (w, r)
}

#[test]
fn a_force_on_b_does_not_wait_for_a_held_write_back_of_a() {
    let Ok(engine) = Engine::new(&EngineConfig::default().backend(Backend::IoUring)) else {
        eprintln!("skipped: no io_uring here");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (pipe, mut drain) = fifo(dir.path());
    let a_cfg = FileConfig::default()
        .preallocate(0)
        .punch_holes(false)
        .max_write_bytes(256 << 10);
    let a = Arc::new(engine.from_file(pipe, &a_cfg).unwrap());
    let b = engine
        .create(dir.path().join("b"), &FileConfig::default())
        .unwrap();
    // 1 MiB for A: more than the pipe holds, so A's write-back blocks in the kernel.
    a.write(0, &vec![0xA5; 1 << 20]).unwrap();
    let a2 = Arc::clone(&a);
    let a_forced = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&a_forced);
    let a_force = thread::spawn(move || {
        let r = a2.force();
        flag.store(true, Ordering::SeqCst);
        r
    });
    // B commits several times while A's write-back cannot finish.
    let b = within_60s("B's commits", move || {
        for i in 0..20u64 {
            b.append(&i.to_le_bytes()).unwrap();
            b.force().unwrap();
        }
        b
    });
    assert!(
        !a_forced.load(Ordering::SeqCst),
        "A's write-back was held all along (else this test shows nothing)"
    );
    // Let A's write-back through: its force completes too.
    let mut got = 0;
    let mut buf = vec![0u8; 64 << 10];
    while got < 1 << 20 {
        let n = drain.read(&mut buf).unwrap();
        assert!(buf[..n].iter().all(|&x| x == 0xA5));
        got += n;
    }
    // A's bytes all went through (drained above); its sync then fails as a FIFO's does
    // (`fdatasync` gives EINVAL), latched in A alone.
    let e = a_force.join().unwrap().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    assert_eq!(b.end_position(), 20 * 8);
    b.close().unwrap();
    assert!(Arc::try_unwrap(a).ok().unwrap().close().is_err());
}

#[test]
fn a_flooding_file_cannot_starve_a_siblings_commits_on_a_small_budget() {
    for backend in [Backend::IoUring, Backend::Threads] {
        let Ok(engine) = Engine::new(
            &EngineConfig::default()
                .backend(backend)
                .buffer_bytes(256 << 10),
        ) else {
            eprintln!("skipped {backend}: unavailable");
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        let cfg = FileConfig::default();
        let a = Arc::new(engine.create(dir.path().join("a"), &cfg).unwrap());
        let b = engine.create(dir.path().join("b"), &cfg).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // Four writers flood A with 64 KiB writes: the budget is always spent.
        let floods: Vec<_> = (0..4u64)
            .map(|t| {
                let (a, stop) = (Arc::clone(&a), Arc::clone(&stop));
                thread::spawn(move || {
                    let data = vec![t as u8; 64 << 10];
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        a.write(((i * 4 + t) % 256) * (64 << 10), &data).unwrap();
                        i += 1;
                    }
                })
            })
            .collect();
        let b = within_60s("B's commits under A's flood", move || {
            for i in 0..200u64 {
                b.append(&[i as u8; 512]).unwrap();
                b.force().unwrap();
            }
            b
        });
        stop.store(true, Ordering::Relaxed);
        for t in floods {
            t.join().unwrap();
        }
        assert_eq!(b.end_position(), 200 * 512);
        b.close().unwrap();
        Arc::try_unwrap(a).ok().unwrap().close().unwrap();
    }
}
