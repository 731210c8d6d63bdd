//! `force_async` / `force_range_async`: the same contract as `force`, as a `Future`.
//!
//! - many committing tasks under a tokio runtime, together with blocking forcers, all
//!   records durable and read back;
//! - 10,000 futures pending at once with no new thread;
//! - a future dropped mid-flight frees its waiter and loses no wake for the others;
//! - a failure wakes every pending future with the errno.
//!
//! The tests that need futures to stay pending hold the write they wait for with the
//! fault injector: the engine refuses its submission (`EAGAIN`) a number of times, each
//! refusal retried 1 ms later, so no sync can complete before the hold ends. Each such
//! test checks that the hold was still in effect when it looked.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use writebehind::{errno, Backend, Config, Handle, WriteBehindFile};

const BACKENDS: [Backend; 2] = [Backend::IoUring, Backend::Threads];

/// One test at a time: the thread-count check must not see other tests' threads.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn open(backend: Backend, cfg: Config) -> (tempfile::TempDir, WriteBehindFile) {
    let dir = common::tempdir();
    let h = WriteBehindFile::create(dir.path().join("log"), &cfg.backend(backend)).unwrap();
    (dir, h)
}

/// A record that says who wrote it: task `t`, commit `i`.
fn record(t: u64, i: u64) -> [u8; 64] {
    let mut r = [0u8; 64];
    r[..8].copy_from_slice(&t.to_le_bytes());
    r[8..16].copy_from_slice(&i.to_le_bytes());
    r[16..].fill((t * 31 + i) as u8);
    r
}

#[test]
fn many_committing_tasks_under_tokio() {
    let _serial = serial();
    for backend in BACKENDS {
        let (_dir, h) = open(backend, Config::default());
        let h = Arc::new(h);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        const TASKS: u64 = 64;
        const COMMITS: u64 = 40;
        // Blocking forcers commit at the same time: both kinds share group commits.
        let blocking: Vec<_> = (0..2)
            .map(|b| {
                let h = h.clone();
                thread::spawn(move || {
                    let mut placed = Vec::new();
                    for i in 0..COMMITS {
                        let off = h.append(&record(1000 + b, i)).unwrap();
                        h.force().unwrap();
                        placed.push((off, record(1000 + b, i)));
                    }
                    placed
                })
            })
            .collect();
        let placed = rt.block_on(async {
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let h = h.clone();
                    tokio::spawn(async move {
                        let mut placed = Vec::new();
                        for i in 0..COMMITS {
                            let off = h.append(&record(t, i)).unwrap();
                            if i % 2 == 0 {
                                h.force_async().await.unwrap();
                            } else {
                                h.force_range_async(off, off + 64).await.unwrap();
                            }
                            placed.push((off, record(t, i)));
                        }
                        placed
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        });
        let mut placed = placed;
        for b in blocking {
            placed.extend(b.join().unwrap());
        }
        let h = Arc::into_inner(h).unwrap();
        let st = h.stats();
        assert_eq!(
            st.forces_served + st.forces_immediate,
            (TASKS + 2) * COMMITS
        );
        eprintln!(
            "{backend:?}: {} forces served by {} fsyncs ({} led by a blocking forcer)",
            st.forces_served, st.fsyncs, st.leader_syncs
        );
        for (off, rec) in &placed {
            let mut got = [0u8; 64];
            h.read(*off, &mut got).unwrap();
            assert_eq!(&got, rec, "{backend:?}: record at {off}");
        }
        h.close().unwrap();
    }
}

/// Counts wakes; the test polls by hand.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    /// Waits (at most 30 s) until `n` wakes were counted.
    fn wait_for(&self, n: usize, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.0.load(Ordering::SeqCst) < n {
            assert!(std::time::Instant::now() < deadline, "{what}: lost wakes");
            thread::sleep(Duration::from_millis(1));
        }
    }
}

fn poll_once<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

/// The threads this test or the library may have started: the library's (named
/// `writebehind-*`) and any unnamed thread spawned from this one (which inherits its
/// name). Not the kernel's io-wq workers (`iou-wrk-*`, which the ring starts for punted
/// requests) nor the test harness's threads for other tests, which come and go meanwhile.
fn threads() -> BTreeSet<u32> {
    let comm = |t: &str| std::fs::read_to_string(format!("/proc/self/task/{t}/comm")).ok();
    let mine = std::fs::read_to_string("/proc/thread-self/comm").ok();
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_str()?.to_string();
            let c = comm(&name)?;
            (c.starts_with("writebehind") || Some(&c) == mine.as_ref())
                .then(|| name.parse().ok())?
        })
        .collect()
}

#[cfg(feature = "fault-injection")]
mod held {
    use super::*;
    use writebehind::fault::{Fault, FaultInjector};

    /// Refusals of the held write's submission: each is retried 1 ms later, and 64 in a
    /// row would fail the handle.
    const HOLD: u64 = 60;

    /// A handle with one dirty write whose write-back the engine refuses `HOLD` times.
    fn held(backend: Backend) -> (tempfile::TempDir, WriteBehindFile, FaultInjector) {
        let faults = FaultInjector::new();
        // No preallocation: the zero fill after the append would run on an io_uring
        // worker thread (io-wq) that may appear while the futures are pending.
        let cfg = Config::default()
            .max_dirty_age(Duration::from_secs(3600))
            .preallocate(0)
            .fault_injector(faults.clone());
        let (dir, h) = open(backend, cfg);
        h.append(&[7u8; 4096]).unwrap();
        for n in 0..HOLD {
            faults.refuse_write_push(n, libc::EAGAIN);
        }
        (dir, h, faults)
    }

    fn still_held(faults: &FaultInjector) -> bool {
        faults.injected().refused_pushes < HOLD
    }

    #[test]
    fn ten_thousand_pending_futures_and_no_new_thread() {
        let _serial = serial();
        for backend in BACKENDS {
            let (_dir, h, faults) = held(backend);
            let before = threads();
            let counter = Arc::new(CountingWaker::default());
            let waker = Waker::from(counter.clone());
            let mut futures: Vec<_> = (0..10_000).map(|_| h.force_async()).collect();
            for f in &mut futures {
                assert!(poll_once(f, &waker).is_pending());
            }
            assert!(
                still_held(&faults),
                "{backend:?}: polling took longer than the hold; nothing was pending"
            );
            // (A thread of an earlier handle may still be exiting: only new ones count.)
            let started: Vec<u32> = threads().difference(&before).copied().collect();
            assert!(
                started.is_empty(),
                "{backend:?}: pending futures started threads {started:?}"
            );
            // Every future is woken once the write lands and the sync completes.
            counter.wait_for(futures.len(), &format!("{backend:?}"));
            for f in &mut futures {
                match poll_once(f, &waker) {
                    Poll::Ready(r) => r.unwrap(),
                    Poll::Pending => panic!("{backend:?}: woken but not ready"),
                }
            }
            let st = h.stats();
            assert_eq!(st.forces_served, 10_000, "{backend:?}");
            assert!(
                st.fsyncs <= 2,
                "{backend:?}: {} fsyncs for one group",
                st.fsyncs
            );
            drop(futures);
            h.close().unwrap();
        }
    }

    #[test]
    fn a_dropped_future_frees_its_waiter_and_loses_no_wake() {
        let _serial = serial();
        for backend in BACKENDS {
            let (_dir, h, faults) = held(backend);
            let counter = Arc::new(CountingWaker::default());
            let waker = Waker::from(counter.clone());
            let mut dropped = h.force_async();
            let mut kept = h.force_async();
            let mut range = h.force_range_async(0, 10);
            assert!(poll_once(&mut dropped, &waker).is_pending());
            assert!(poll_once(&mut kept, &waker).is_pending());
            assert!(poll_once(&mut range, &waker).is_pending());
            drop(dropped); // mid-flight
            assert!(still_held(&faults), "{backend:?}: the hold ended too early");
            // A blocking force joins and returns once the write lands.
            h.force().unwrap();
            counter.wait_for(2, &format!("{backend:?}"));
            assert!(matches!(poll_once(&mut kept, &waker), Poll::Ready(Ok(()))));
            assert!(matches!(poll_once(&mut range, &waker), Poll::Ready(Ok(()))));
            // Force again after the cancellation: new data, new futures, all served.
            h.append(&[8u8; 100]).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                // Dropped after its first poll, while its sync may be in flight.
                let f = h.force_async();
                let _ = tokio::time::timeout(Duration::ZERO, f).await;
                h.append(&[9u8; 100]).unwrap();
                h.force_async().await.unwrap();
            });
            h.force().unwrap();
            let st = h.stats();
            assert!(st.forces_served >= 4, "{backend:?}: {st:?}");
            drop((kept, range));
            h.close().unwrap();
        }
    }

    #[test]
    fn a_failure_wakes_every_pending_future_with_the_error() {
        let _serial = serial();
        for backend in BACKENDS {
            let (_dir, h, faults) = held(backend);
            // The held write then fails: the handle latches EIO.
            faults.inject_write(0, Fault::Errno(libc::EIO));
            let counter = Arc::new(CountingWaker::default());
            let waker = Waker::from(counter.clone());
            let mut futures: Vec<_> = (0..1000)
                .map(|i| {
                    if i % 2 == 0 {
                        h.force_async()
                    } else {
                        h.force_range_async(0, 4096)
                    }
                })
                .collect();
            for f in &mut futures {
                assert!(poll_once(f, &waker).is_pending());
            }
            assert!(still_held(&faults), "{backend:?}: the hold ended too early");
            counter.wait_for(futures.len(), &format!("{backend:?}"));
            for f in &mut futures {
                match poll_once(f, &waker) {
                    Poll::Ready(Err(e)) => assert_eq!(errno(&e), Some(libc::EIO)),
                    other => panic!("{backend:?}: {other:?}"),
                }
            }
            // Same errors as force: a new future fails at once with the latched errno.
            let mut late = h.force_async();
            match poll_once(&mut late, &waker) {
                Poll::Ready(Err(e)) => assert_eq!(errno(&e), Some(libc::EIO)),
                other => panic!("{backend:?}: {other:?}"),
            }
            drop((futures, late));
            assert!(h.close().is_err());
        }
    }
}

#[test]
fn bad_range_and_empty_range_resolve_at_once() {
    let _serial = serial();
    let (_dir, h) = open(Backend::Auto, Config::default());
    let waker = Waker::noop();
    let mut bad = h.force_range_async(10, 5);
    match poll_once(&mut bad, waker) {
        Poll::Ready(Err(e)) => assert_eq!(errno(&e), Some(libc::EINVAL)),
        other => panic!("{other:?}"),
    }
    let mut empty = h.force_range_async(5, 5);
    assert!(matches!(poll_once(&mut empty, waker), Poll::Ready(Ok(()))));
    let mut nothing = h.force_async();
    assert!(matches!(
        poll_once(&mut nothing, waker),
        Poll::Ready(Ok(()))
    ));
    drop((bad, empty, nothing));
    h.close().unwrap();
}
