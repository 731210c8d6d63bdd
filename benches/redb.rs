//! redb commits on the handles (feature `redb`): one writer inserts 100-byte values into
//! a redb table and commits with redb's default durability (every commit syncs).
//!
//! - `writebehind/N`: redb on `WriteBehindFile` (io_uring), N inserts per commit;
//! - `writebehind-threads/N`: the same on the thread engine;
//! - `redb-file/N`: redb on its own file backend (`Database::create`), what redb users
//!   run today.
//!
//! One iteration is one committed transaction, so the time per iteration is the commit
//! latency and its inverse the commits per second. Run with
//! `cargo bench --features redb --bench redb`; each case measures for 3 s after a 1 s
//! warm-up.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use redb::{Database, TableDefinition};
use writebehind::{Backend, Config, WriteBehindFile};

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("bench");
const VALUE: [u8; 100] = [0x5A; 100];

fn open(kind: &str, path: &std::path::Path) -> Database {
    let wb = |backend| {
        let file = WriteBehindFile::create(path, &Config::default().backend(backend))
            .expect("open writebehind");
        Database::builder()
            .create_with_backend(file)
            .expect("redb on writebehind")
    };
    match kind {
        "writebehind" => wb(Backend::IoUring),
        "writebehind-threads" => wb(Backend::Threads),
        _ => Database::create(path).expect("redb on its file backend"),
    }
}

fn commits(c: &mut Criterion) {
    let mut g = c.benchmark_group("redb_commit");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for batch in [1u64, 100] {
        g.throughput(Throughput::Elements(batch));
        for kind in ["writebehind", "writebehind-threads", "redb-file"] {
            let dir = tempfile::tempdir().expect("temp dir");
            let db = open(kind, &dir.path().join("db.redb"));
            let mut key = 0u64;
            g.bench_function(BenchmarkId::new(kind, batch), |b| {
                b.iter(|| {
                    let tx = db.begin_write().expect("begin");
                    {
                        let mut t = tx.open_table(TABLE).expect("table");
                        for _ in 0..batch {
                            key += 1;
                            t.insert(key, VALUE.as_slice()).expect("insert");
                        }
                    }
                    tx.commit().expect("commit");
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, commits);
criterion_main!(benches);
