//! redb on writebehind against redb on its own file backend, one commit on each in turn,
//! so that both meet the same disk: on a machine shared with other I/O the cells of
//! `writebehind bench --workload redb` run seconds apart and see different disks.
//!
//! `cargo run --release --features redb --example redb_interleaved -- [BATCH] [COMMITS]
//! [none]`: BATCH inserts of 100 bytes per commit (default 1), COMMITS commits on each
//! backend (default 3000), `none` for `Durability::None` (no `sync_data`). The databases
//! are created in a temporary directory under the current one, so the file system is
//! the current directory's. Prints per backend the commit latency (p50, p90, mean), redb's
//! `write` calls per commit and the time in them and in `sync_data`, and the ratios.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use redb::backends::FileBackend;
use redb::{Database, Durability, StorageBackend, TableDefinition};
use writebehind::{Config, WriteBehindFile};

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("bench");

/// What redb asked of one backend: write calls and the time in them and in `sync_data`.
#[derive(Debug, Default)]
struct Calls {
    writes: AtomicU64,
    write_ns: AtomicU64,
    sync_ns: AtomicU64,
}

/// A backend that counts redb's calls into `inner`.
#[derive(Debug)]
struct Counted<B> {
    inner: B,
    calls: Arc<Calls>,
}

impl<B: StorageBackend> StorageBackend for Counted<B> {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        let t = Instant::now();
        let r = self.inner.sync_data();
        let ns = t.elapsed().as_nanos() as u64;
        self.calls.sync_ns.fetch_add(ns, Ordering::Relaxed);
        r
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let t = Instant::now();
        let r = self.inner.write(offset, data);
        let ns = t.elapsed().as_nanos() as u64;
        self.calls.write_ns.fetch_add(ns, Ordering::Relaxed);
        self.calls.writes.fetch_add(1, Ordering::Relaxed);
        r
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let batch: u64 = args.first().map_or(Ok(1), |s| s.parse())?;
    let commits: usize = args.get(1).map_or(Ok(3000), |s| s.parse())?;
    let durable = args.get(2).is_none_or(|s| s != "none");
    let dir = tempfile::tempdir_in(".")?;
    let own_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join("own.redb"))?;
    let calls = [Arc::new(Calls::default()), Arc::new(Calls::default())];
    let own = Database::builder().create_with_backend(Counted {
        inner: FileBackend::new(own_file)?,
        calls: calls[0].clone(),
    })?;
    let wb = Database::builder().create_with_backend(Counted {
        inner: WriteBehindFile::create_new(dir.path().join("wb.redb"), &Config::default())?,
        calls: calls[1].clone(),
    })?;
    // Creating the databases is not part of the loop.
    for c in &calls {
        for a in [&c.writes, &c.write_ns, &c.sync_ns] {
            a.store(0, Ordering::Relaxed);
        }
    }
    let value = [0x5Au8; 100];
    let mut latency: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut key = 0u64;
    for i in 0..commits {
        // Alternate which goes first, so that neither always follows the other's sync.
        for which in [i % 2, 1 - i % 2] {
            let db = if which == 0 { &own } else { &wb };
            let mut tx = db.begin_write()?;
            if !durable {
                tx.set_durability(Durability::None)?;
            }
            {
                let mut table = tx.open_table(TABLE)?;
                for k in 0..batch {
                    table.insert(key + k, value.as_slice())?;
                }
            }
            let t = Instant::now();
            tx.commit()?;
            latency[which].push(t.elapsed().as_nanos() as u64);
        }
        key += batch;
    }
    let n = commits as f64;
    let mut p50 = [0.0; 2];
    let mut mean = [0.0; 2];
    for (which, name) in [(0, "redb's own backend"), (1, "writebehind")] {
        let l = &mut latency[which];
        l.sort_unstable();
        let at = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)] as f64 / 1e3;
        p50[which] = at(0.5);
        mean[which] = l.iter().sum::<u64>() as f64 / n / 1e3;
        let c = &calls[which];
        println!(
            "{name:18}  commit p50 {:7.1} µs  p90 {:7.1} µs  mean {:7.1} µs  ({:6.0} commits/s) | {:.2} writes/commit, {:5.1} µs in writes, {:6.1} µs in sync_data per commit",
            p50[which],
            at(0.9),
            mean[which],
            1e6 / mean[which],
            c.writes.load(Ordering::Relaxed) as f64 / n,
            c.write_ns.load(Ordering::Relaxed) as f64 / n / 1e3,
            c.sync_ns.load(Ordering::Relaxed) as f64 / n / 1e3,
        );
    }
    println!(
        "writebehind / own backend: {:.2}x by commit p50, {:.2}x by commits/s (batch {batch}, {commits} commits each, durability {})",
        p50[0] / p50[1],
        mean[0] / mean[1],
        if durable { "Immediate" } else { "None" }
    );
    Ok(())
}
