//! Tests specific to the write-behind handle: concurrency stress against a model,
//! coalescing, backpressure, copy-on-write under load, reopen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

mod common;

use common::{pattern, stress, Rng};
use writebehind::{Backend, Config, Handle, WriteBehindFile};

const PAGE: usize = 4096;

/// A page whose every byte depends on (page, version): a torn or stale page is visible.
fn page_image(page: u64, version: u64) -> Vec<u8> {
    pattern(
        page.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version.wrapping_mul(0xD1B5_4A32_D192_ED03),
        PAGE,
    )
}

fn configs() -> Vec<(&'static str, Config)> {
    let small = Config::default().max_blocks(8).buffer_bytes(64 << 10);
    vec![
        ("default", Config::default()),
        ("small budget", small.clone()),
        ("direct small budget", small.clone().direct_io(true)),
        ("threads backend", small.backend(Backend::Threads)),
    ]
}

/// 16 threads rewrite overlapping sets of pages (a test-side lock per page orders each
/// write with its model update), while other threads force and read; then close, reopen
/// and compare every page with the model.
#[test]
fn concurrent_rewrites_forces_and_reads_lose_nothing() {
    let pages: u64 = 64;
    let writes_per_thread = if stress() { 20_000 } else { 400 };
    for (name, cfg) in configs() {
        let dir = common::tempdir();
        let path = dir.path().join("stress");
        let file = Arc::new(WriteBehindFile::create(&path, &cfg).unwrap());
        let model: Arc<Vec<Mutex<u64>>> = Arc::new((0..pages).map(|_| Mutex::new(0)).collect());
        for p in 0..pages {
            let _g = model[p as usize].lock().unwrap();
            file.write(p * PAGE as u64, &page_image(p, 0)).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut side = Vec::new();
        for t in 0..4u64 {
            let (file, model, stop) = (file.clone(), model.clone(), stop.clone());
            side.push(thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if t % 2 == 0 {
                        file.force().unwrap();
                    } else {
                        let p = (n * 7 + t) % pages;
                        let g = model[p as usize].lock().unwrap();
                        let mut buf = vec![0u8; PAGE];
                        file.read(p * PAGE as u64, &mut buf).unwrap();
                        assert!(buf == page_image(p, *g), "page {p} read back wrong");
                        drop(g);
                    }
                    n += 1;
                }
            }));
        }
        let writers: Vec<_> = (0..16u64)
            .map(|t| {
                let (file, model) = (file.clone(), model.clone());
                thread::spawn(move || {
                    let mut rng = Rng::new(t + 1);
                    for _ in 0..writes_per_thread {
                        let x = rng.next();
                        // Each thread favours its own quarter of the pages, overlapping others.
                        let p = ((x >> 33) % (pages / 2) + (t % 4) * (pages / 8)) % pages;
                        let mut g = model[p as usize].lock().unwrap();
                        *g += 1;
                        file.write(p * PAGE as u64, &page_image(p, *g)).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for s in side {
            s.join().unwrap();
        }
        let file = Arc::try_unwrap(file).expect("all threads joined");
        let stats = file.close().unwrap();
        let reopened = WriteBehindFile::open(&path, &cfg).unwrap();
        assert_eq!(reopened.end_position(), pages * PAGE as u64, "{name}");
        for p in 0..pages {
            let mut buf = vec![0u8; PAGE];
            reopened.read(p * PAGE as u64, &mut buf).unwrap();
            let v = *model[p as usize].lock().unwrap();
            assert!(
                buf == page_image(p, v),
                "{name}: page {p} lost or torn after reopen (want version {v})"
            );
        }
        reopened.close().unwrap();
        eprintln!(
            "{name}: {} writes, {} write ops, {} fsyncs serving {} forces, {} backpressure waits",
            16 * writes_per_thread,
            stats.write_ops,
            stats.fsyncs,
            stats.forces_served,
            stats.backpressure_waits
        );
    }
}

/// 4096 sequential pages with no force: far fewer write requests than blocks.
#[test]
fn sequential_pages_coalesce_into_few_writes() {
    for (name, cfg) in [
        ("buffered", Config::default()),
        ("direct", Config::default().direct_io(true)),
    ] {
        let dir = common::tempdir();
        let file = WriteBehindFile::create(dir.path().join("seq"), &cfg).unwrap();
        for p in 0..4096u64 {
            file.write(p * PAGE as u64, &page_image(p, 1)).unwrap();
        }
        let stats = file.close().unwrap();
        eprintln!(
            "{name}: 4096 pages -> {} write ops ({:.1} blocks per write)",
            stats.write_ops,
            stats.coalescing()
        );
        assert_eq!(stats.bytes_requested, 4096 * PAGE as u64);
        assert_eq!(stats.bytes_written, 4096 * PAGE as u64);
        assert!(
            stats.write_ops * 16 <= 4096,
            "{name}: {} write ops for 4096 pages",
            stats.write_ops
        );
        if name == "buffered" {
            // A buffered file's writes stay within 256 KiB by default (`BUFFERED_MAX_WRITE`
            // in src/wb/mod.rs): 16 MiB take at least 64.
            assert!(
                stats.write_ops >= 64,
                "{name}: {} write ops",
                stats.write_ops
            );
        }
    }
}

/// 200 scattered pages of a direct file, well below the watermark, with no force and an
/// hour of dirty age: write-back still starts on its own (enough scattered blocks that a
/// force would hand them to the engine anyway), so the device works while the writer
/// goes on; the force that follows finds them written. A buffered file waits as before.
#[test]
fn scattered_pages_are_written_before_any_force() {
    let direct = Config::default()
        .direct_io(true)
        .max_dirty_age(std::time::Duration::from_secs(3600));
    for (name, cfg) in [
        ("direct", direct.clone()),
        ("direct, threads backend", direct.backend(Backend::Threads)),
        (
            "buffered",
            // A watermark (the largest write) above the 800 KiB written: only the early
            // rule for direct files could start write-back here.
            Config::default()
                .max_dirty_age(std::time::Duration::from_secs(3600))
                .max_write_bytes(4 << 20),
        ),
    ] {
        let dir = common::tempdir();
        let file = WriteBehindFile::create(dir.path().join("pages"), &cfg).unwrap();
        // Every other page of 400, scrambled: no two adjacent.
        let pages: Vec<u64> = (0..200u64).map(|i| (i * 67 % 200) * 2).collect();
        for &p in &pages {
            file.write(p * PAGE as u64, &page_image(p, 1)).unwrap();
        }
        if name == "buffered" {
            thread::sleep(std::time::Duration::from_millis(100));
            assert_eq!(
                file.stats().bytes_written,
                0,
                "{name}: written before a force"
            );
        }
        // Fewer than 64 left (`EAGER_BLOCKS`, where write-back starts early): pages
        // written after a stream ended wait for the next 64, the age or the force, and
        // those its last completions left that one lead can take wait for the force.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while name != "buffered" && file.stats().bytes_written <= (200 - 64) * PAGE as u64 {
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: {} of 200 pages written after 10 s without a force",
                file.stats().bytes_written / PAGE as u64
            );
            thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(file.stats().fsyncs, 0, "{name}: nothing forced");
        file.force().unwrap();
        let stats = file.close().unwrap();
        assert_eq!(stats.bytes_written, 200 * PAGE as u64, "{name}");
        let back = std::fs::read(dir.path().join("pages")).unwrap();
        for &p in &pages {
            let at = (p as usize) * PAGE;
            assert!(
                back[at..at + PAGE] == page_image(p, 1)[..],
                "{name}: page {p}"
            );
        }
    }
}

/// A sequential writer grows extents while write-back sends their older parts (small
/// budgets: chunks of a few pages, always some in flight), readers read spans that end at
/// the newest byte (an extent's old and new bytes, its in-flight and growing parts), and a
/// forcer forces recent ranges. Every read and, after reopening, the whole file match the
/// offsets' patterns; most writes grew an extent.
#[test]
fn extents_grow_while_older_parts_are_in_flight_and_reads_span_them() {
    let total: u64 = if stress() { 1 << 30 } else { 16 << 20 };
    let byte_at = |o: u64| (o.wrapping_mul(0x9E37_79B9) >> 13) as u8;
    for (name, cfg) in configs() {
        let dir = common::tempdir();
        let path = dir.path().join("extents");
        let file = Arc::new(WriteBehindFile::create(&path, &cfg).unwrap());
        let frontier = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut side = Vec::new();
        for t in 0..3u64 {
            let (file, frontier, stop) = (file.clone(), frontier.clone(), stop.clone());
            side.push(thread::spawn(move || {
                let mut rng = Rng::new(0xE7E7 + t);
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let end = frontier.load(Ordering::Acquire);
                    let back = (PAGE as u64 * rng.range(1, 48)).min(end);
                    if back == 0 {
                        thread::yield_now();
                        continue;
                    }
                    if t == 2 {
                        file.force_range(end - back, end).unwrap();
                        continue;
                    }
                    let mut buf = vec![0u8; back as usize];
                    file.read(end - back, &mut buf).unwrap();
                    for (i, &b) in buf.iter().enumerate() {
                        let o = end - back + i as u64;
                        assert_eq!(
                            b,
                            byte_at(o),
                            "{name}: byte at {o} (read [{}, {end}))",
                            end - back
                        );
                    }
                    reads += 1;
                }
                reads
            }));
        }
        let mut rng = Rng::new(42);
        let (mut off, mut writes) = (0u64, 0u64);
        while off < total {
            // Mostly pages, sometimes several, sometimes a 512-byte piece (a record).
            let len = match rng.below(10) {
                0 => 512,
                1 => PAGE * rng.range(2, 9) as usize,
                _ => PAGE,
            };
            let data: Vec<u8> = (off..off + len as u64).map(byte_at).collect();
            file.write(off, &data).unwrap();
            off += len as u64;
            writes += 1;
            frontier.store(off, Ordering::Release);
        }
        stop.store(true, Ordering::Relaxed);
        let reads: u64 = side.into_iter().map(|t| t.join().unwrap()).sum();
        let file = Arc::into_inner(file).unwrap();
        let stats = file.close().unwrap();
        eprintln!(
            "{name}: {} of {} bytes in {} write ops, {} writes grew an extent, {reads} reads",
            stats.bytes_written, stats.bytes_requested, stats.write_ops, stats.extended_writes
        );
        assert!(reads > 0, "{name}: no read ran");
        // (With the small budgets a chunk is 4 pages, and writes of 2-8 pages do not fit.)
        assert!(
            stats.extended_writes * 3 > writes,
            "{name}: only {} of {writes} writes grew an extent",
            stats.extended_writes
        );
        let reopened = WriteBehindFile::open(&path, &Config::default()).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < total {
            let n = (total - at).min(buf.len() as u64) as usize;
            reopened.read(at, &mut buf[..n]).unwrap();
            for (i, &b) in buf[..n].iter().enumerate() {
                assert_eq!(
                    b,
                    byte_at(at + i as u64),
                    "{name}: byte at {} after reopen",
                    at + i as u64
                );
            }
            at += n as u64;
        }
    }
}

/// With a budget of 8 blocks, many writers wait for write-back instead of failing,
/// spinning or deadlocking, and the waits are counted.
#[test]
fn backpressure_waits_and_counts() {
    let dir = common::tempdir();
    let cfg = Config::default().max_blocks(8).buffer_bytes(32 << 10);
    let file = Arc::new(WriteBehindFile::create(dir.path().join("bp"), &cfg).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let file = file.clone();
            thread::spawn(move || {
                for i in 0..500u64 {
                    let p = t * 500 + i;
                    file.write(p * PAGE as u64, &page_image(p, 1)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let file = Arc::try_unwrap(file).unwrap();
    let stats = file.close().unwrap();
    assert!(
        stats.backpressure_waits > 0,
        "2000 pages through an 8-block budget never waited"
    );
    assert!(stats.backpressure_wait_ns > 0);
}

/// Small writes at scattered offsets are packed into a shared buffer that the handle
/// holds for the next one. With a budget of one buffer, a writer that needs another
/// (the packing buffer is full, or its write is too big to pack) waits for write-back,
/// and the handle lets go of the packing buffer then: the writer gets its space instead
/// of waiting for good. Every byte reads back after a reopen.
#[test]
fn a_packing_buffer_never_holds_back_a_waiting_writer() {
    let dir = common::tempdir();
    let path = dir.path().join("packed");
    let cfg = Config::default().max_blocks(1);
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    thread::spawn(move || {
        let file = WriteBehindFile::create(&p, &cfg).unwrap();
        let mut model = vec![0u8; 64 * PAGE];
        for i in 0..300u64 {
            let (off, len) = if i % 7 == 6 {
                (((i * 5) % 32) * PAGE as u64, 8 * PAGE) // too big to pack
            } else {
                (((i * 2654435761) % 64) * PAGE as u64, PAGE)
            };
            let data = pattern(i, len);
            file.write(off, &data).unwrap();
            model[off as usize..off as usize + len].copy_from_slice(&data);
        }
        let stats = file.close().unwrap();
        tx.send((model, stats.packed_writes, stats.backpressure_waits))
            .unwrap();
    });
    let (model, packed, waits) = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("every write returned within 60 s");
    assert!(packed > 100 && waits > 10, "packed {packed}, waits {waits}");
    assert_eq!(std::fs::read(&path).unwrap(), model);
}

/// Group commit: concurrent forces share fsyncs.
#[test]
fn concurrent_forces_share_fsyncs() {
    let dir = common::tempdir();
    let file =
        Arc::new(WriteBehindFile::create(dir.path().join("log"), &Config::default()).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|_| {
            let file = file.clone();
            thread::spawn(move || {
                for _ in 0..200 {
                    file.append(&[7u8; 512]).unwrap();
                    file.force().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = Arc::try_unwrap(file).unwrap().close().unwrap();
    eprintln!(
        "1600 forces -> {} fsyncs, {} forces served by them, {} already durable",
        stats.fsyncs, stats.forces_served, stats.forces_immediate
    );
    assert_eq!(
        stats.forces_served + stats.forces_immediate,
        1600,
        "every force is accounted for"
    );
    assert!(
        stats.forces_served >= 200,
        "forces returned without an fsync covering them"
    );
    assert!(stats.fsyncs < stats.forces_served, "no fsync was shared");
}

/// Reads see the newest bytes while writes are in flight, across block boundaries.
#[test]
fn reads_span_buffered_and_written_blocks() {
    let dir = common::tempdir();
    let file =
        WriteBehindFile::create(dir.path().join("mix"), &Config::default().max_blocks(4)).unwrap();
    let mut model: HashMap<u64, u8> = HashMap::new();
    for i in 0..2000u64 {
        let off = (i * 2654435761) % 100_000;
        let len = 1 + (i % 300);
        let v = (i % 251) as u8;
        file.write(off, &vec![v; len as usize]).unwrap();
        for o in off..off + len {
            model.insert(o, v);
        }
        if i % 50 == 0 {
            let mut buf = vec![0u8; 5000];
            let start = off.saturating_sub(2000);
            let n = buf.len().min((file.end_position() - start) as usize);
            file.read(start, &mut buf[..n]).unwrap();
            for (k, &b) in buf[..n].iter().enumerate() {
                assert_eq!(
                    b,
                    *model.get(&(start + k as u64)).unwrap_or(&0),
                    "byte {}",
                    start + k as u64
                );
            }
        }
    }
    file.close().unwrap();
}

/// `sync_all` is `fsync` and `sync_data` is `fdatasync`, whatever `Config::sync` says; an
/// `fsync` is owed whenever the file changed since the last one, so `sync_all` right
/// after a `force` (by `fdatasync`) still syncs, and returns at once only when nothing
/// changed since the last `fsync`.
#[test]
fn sync_all_after_force_still_fsyncs() {
    for backend in [Backend::IoUring, Backend::Threads] {
        for mode in [writebehind::SyncMode::Data, writebehind::SyncMode::All] {
            let dir = common::tempdir();
            // No preallocation: a zero fill completing after a force is a change an
            // `fsync` must cover (see `size_changes_owe_an_fsync`), which would make the
            // counts below depend on timing.
            let cfg = Config::default().backend(backend).sync(mode).preallocate(0);
            let h = WriteBehindFile::create(dir.path().join("f"), &cfg).unwrap();
            let fsyncs = || h.stats().fsyncs;
            h.write(0, &page_image(0, 1)).unwrap();
            h.force().unwrap();
            let n = fsyncs();
            h.sync_all().unwrap();
            let owed = u64::from(mode == writebehind::SyncMode::Data);
            assert_eq!(
                fsyncs(),
                n + owed,
                "{backend:?} {mode:?}: sync_all after force"
            );
            h.sync_all().unwrap();
            h.sync_data().unwrap();
            h.force().unwrap();
            assert_eq!(
                fsyncs(),
                n + owed,
                "{backend:?} {mode:?}: nothing changed since"
            );
            h.write(PAGE as u64, &page_image(1, 1)).unwrap();
            h.sync_data().unwrap();
            assert_eq!(fsyncs(), n + owed + 1, "{backend:?} {mode:?}: sync_data");
            h.sync_all().unwrap();
            assert_eq!(
                fsyncs(),
                n + owed + 2,
                "{backend:?} {mode:?}: sync_all after it"
            );
            h.close().unwrap();
        }
    }
}

/// A size change is metadata only an `fsync` covers: after a hole punch (which no force
/// waits for) completes, `sync_all` fsyncs again although every write is durable.
#[test]
fn size_changes_owe_an_fsync() {
    for backend in [Backend::IoUring, Backend::Threads] {
        let dir = common::tempdir();
        let cfg = Config::default()
            .backend(backend)
            .sync(writebehind::SyncMode::All)
            .preallocate(0)
            .punch_holes(true);
        let h = WriteBehindFile::create(dir.path().join("f"), &cfg).unwrap();
        for p in 0..4 {
            h.write(p * PAGE as u64, &page_image(p, 1)).unwrap();
        }
        h.sync_all().unwrap();
        let n = h.stats().fsyncs;
        h.sync_all().unwrap();
        assert_eq!(h.stats().fsyncs, n, "{backend:?}: nothing changed");
        h.truncate_start(2 * PAGE as u64).unwrap();
        let t = std::time::Instant::now();
        while h.stats().bytes_punched == 0 && h.stats().punches_refused == 0 {
            assert!(
                t.elapsed().as_secs() < 10,
                "{backend:?}: the punch never completed"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        h.sync_all().unwrap();
        assert_eq!(
            h.stats().fsyncs,
            n + 1,
            "{backend:?}: sync_all after a punch"
        );
        h.close().unwrap();
    }
}
