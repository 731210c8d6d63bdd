//! The `seq` workload on glommio's `DmaStreamWriter`: one thread writes 4 KiB blocks
//! (`write_all`) sequentially into an O_DIRECT file for a fixed time, then syncs and
//! closes; prints writes/s and MB/s over the whole run (writes + sync + close), the same
//! span `writebehind bench` reports, and the per-write ack percentiles.
//!
//! Usage: `glommio-seq DIR [SECONDS] [BLOCK] [BUFFER] [WRITE_BEHIND]`
//! (defaults: 2 s, 4096 B, 1 MiB buffers, 8 buffers written behind).

use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::io::{DmaFile, DmaStreamWriterBuilder};
use glommio::LocalExecutorBuilder;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("usage: glommio-seq DIR [SECONDS] [BLOCK] [BUFFER] [WB]").clone();
    let arg = |i: usize, d: u64| args.get(i).map_or(d, |s| s.parse().expect("a number"));
    let secs = arg(2, 2);
    let block = arg(3, 4096) as usize;
    let buffer = arg(4, 1 << 20) as usize;
    let behind = arg(5, 8) as usize;
    let path = std::path::Path::new(&dir).join(format!("glommio-seq.{}.dat", std::process::id()));
    let p2 = path.clone();
    let ex = LocalExecutorBuilder::default()
        .spawn(move || async move {
            let file = DmaFile::create(&p2).await.expect("create");
            let mut w = DmaStreamWriterBuilder::new(file)
                .with_buffer_size(buffer)
                .with_write_behind(behind)
                .build();
            let data = vec![0xA5u8; block];
            let mut acks = Vec::with_capacity(8 << 20);
            let began = Instant::now();
            let until = began + Duration::from_secs(secs);
            let mut writes = 0u64;
            while Instant::now() < until {
                let t = Instant::now();
                w.write_all(&data).await.expect("write");
                acks.push(t.elapsed().as_nanos() as u64);
                writes += 1;
            }
            let loop_s = began.elapsed().as_secs_f64();
            w.sync().await.expect("sync");
            w.close().await.expect("close");
            let total_s = began.elapsed().as_secs_f64();
            acks.sort_unstable();
            let pct = |p: f64| acks[((acks.len() - 1) as f64 * p) as usize];
            let bytes = writes * block as u64;
            println!(
                "glommio DmaStreamWriter seq: {writes} writes of {block} B, {:.0} writes/s, {:.1} MB/s \
                 (loop {loop_s:.2} s, total {total_s:.2} s); ack p50 {} ns p99 {} ns p99.9 {} ns max {} ns",
                writes as f64 / total_s,
                bytes as f64 / total_s / 1e6,
                pct(0.5),
                pct(0.99),
                pct(0.999),
                acks[acks.len() - 1],
            );
        })
        .expect("executor");
    ex.join().expect("join");
    let _ = std::fs::remove_file(&path);
}
