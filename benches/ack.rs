//! Write acknowledgement: how long `write` of 4 KiB takes to return.
//!
//! - `writebehind_write_4k`: `WriteBehindFile::write` with free buffers: a large buffer
//!   budget and a small set of 64 pages rewritten over and over, so the writer never meets
//!   backpressure; it measures the memcpy into a buffer plus the bookkeeping.
//! - `writebehind_seq_4k`: 4 KiB writes at consecutive offsets over 64 MiB, the `seq`
//!   workload's pattern: each write grows the dirty extent it continues, copied into that
//!   extent's buffer (no B-tree entry, heap entry or buffer reference per write).
//! - `writebehind_scattered_4k`: 4 KiB writes to pages spread over the same 64 MiB, each a
//!   new block (a window of a packing buffer, a B-tree insert and a by-seq heap
//!   entry). Its difference from `writebehind_seq_4k` is what a block per write costs.
//!   Neither writes anything back (see the comment in the code), so the device is out of
//!   both.
//! - `pwrite_page_cache_4k`: `FileExt::write_at` of 4 KiB on a plain `std::fs::File`, i.e.
//!   a `pwrite` into the page cache, over the same 64 pages.
//!
//! Run with `cargo bench --bench ack`; each case measures for 3 s after a 1 s warm-up.

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use writebehind::{Config, Handle, WriteBehindFile};

const PAGE: usize = 4096;
const PAGES: u64 = 64;

fn ack(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = vec![0xA5u8; PAGE];
    let mut g = c.benchmark_group("ack");
    g.throughput(Throughput::Bytes(PAGE as u64));

    let cfg = Config::default().buffer_bytes(256 << 20);
    let wb = WriteBehindFile::create(dir.path().join("wb.dat"), &cfg).expect("open writebehind");
    for p in 0..PAGES {
        wb.write(p * PAGE as u64, &data).expect("prime");
    }
    let mut i = 0u64;
    g.bench_function("writebehind_write_4k", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            wb.write(black_box((i % PAGES) * PAGE as u64), black_box(&data))
                .expect("write")
        })
    });
    let stats = wb.close().expect("close writebehind");
    eprintln!(
        "writebehind: {} backpressure waits during the benchmark (0 means free buffers throughout)",
        stats.backpressure_waits
    );

    // No write-back during these two: a 512 MiB budget and write size put the watermark
    // at 128 MiB, past the 64 MiB written per pass, and the age timer at an hour. At
    // the end of each pass `set_len(0)` drops every block (its cost is in the average,
    // as completions would remove blocks), so every pass inserts afresh.
    const SPAN: u64 = (64 << 20) / PAGE as u64;
    let quiet = Config::default()
        .buffer_bytes(512 << 20)
        .max_write_bytes(512 << 20)
        .max_dirty_age(Duration::from_secs(3600));
    for (name, stride) in [
        ("writebehind_seq_4k", 1),
        ("writebehind_scattered_4k", 40_503),
    ] {
        let wb = WriteBehindFile::create(dir.path().join(name), &quiet).expect("open writebehind");
        let mut i = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                // A stride coprime with SPAN visits every page once per pass.
                let page = i.wrapping_mul(stride) % SPAN;
                i = i.wrapping_add(1);
                if i.is_multiple_of(SPAN) {
                    wb.set_len(0).expect("set_len");
                }
                wb.write(black_box(page * PAGE as u64), black_box(&data))
                    .expect("write")
            })
        });
        let stats = wb.close().expect("close writebehind");
        eprintln!(
            "{name}: {} of {} writes grew an extent, {} bytes written back, {} backpressure waits",
            stats.extended_writes,
            stats.bytes_requested / PAGE as u64,
            stats.bytes_written,
            stats.backpressure_waits
        );
    }

    let f = File::create(dir.path().join("pwrite.dat")).expect("open pwrite file");
    for p in 0..PAGES {
        f.write_all_at(&data, p * PAGE as u64).expect("prime");
    }
    let mut i = 0u64;
    g.bench_function("pwrite_page_cache_4k", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            f.write_at(black_box(&data), black_box((i % PAGES) * PAGE as u64))
                .expect("pwrite")
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = ack
}
criterion_main!(benches);
