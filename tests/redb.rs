//! redb, a storage engine nobody here wrote, on the handles (feature `redb`): a seeded
//! random workload (inserts, updates, deletes, range scans, commits, aborted transactions,
//! reopens) must leave the same contents on `WriteBehindFile` (both engines) and
//! `FileHandle` as on redb's own in-memory backend. redb shrinks its file with `set_len`
//! during ordinary commits, so this exercises `set_len` too. An fsync error reaches a
//! commit with its errno.
#![cfg(feature = "redb")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::Rng;
use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use writebehind::{Backend, Config, FileHandle, WriteBehindFile};

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("kv");

/// Everything in the table, in key order.
fn contents(db: &Database) -> BTreeMap<u64, Vec<u8>> {
    let tx = db.begin_read().unwrap();
    let Ok(t) = tx.open_table(TABLE) else {
        return BTreeMap::new();
    };
    t.iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value(), v.value().to_vec())
        })
        .collect()
}

fn range(db: &Database, lo: u64, hi: u64) -> Vec<(u64, Vec<u8>)> {
    let tx = db.begin_read().unwrap();
    let Ok(t) = tx.open_table(TABLE) else {
        return Vec::new();
    };
    t.range(lo..hi)
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value(), v.value().to_vec())
        })
        .collect()
}

/// One transaction of random inserts, updates and deletes, committed or aborted the same
/// way on both databases.
fn transaction(rng: &mut Rng, dbs: [&Database; 2]) {
    let ops: Vec<(u64, Option<Vec<u8>>)> = (0..rng.range(1, 40))
        .map(|_| {
            let key = rng.below(2000);
            let value = (!rng.chance(20)).then(|| {
                let len = if rng.chance(10) {
                    rng.range(1000, 20_000)
                } else {
                    rng.range(1, 200)
                };
                rng.bytes(len as usize)
            });
            (key, value)
        })
        .collect();
    let commit = !rng.chance(15);
    for db in dbs {
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(TABLE).unwrap();
            for (key, value) in &ops {
                match value {
                    Some(v) => {
                        t.insert(key, v.as_slice()).unwrap();
                    }
                    None => {
                        t.remove(key).unwrap();
                    }
                }
            }
        }
        if commit {
            tx.commit().unwrap();
        } else {
            tx.abort().unwrap();
        }
    }
}

fn workload(name: &str, open: &dyn Fn(&Path, bool) -> Database) {
    let seed = common::seed(&format!("redb {name}"));
    let mut rng = Rng::new(seed);
    let dir = common::tempdir();
    let path = dir.path().join("db.redb");
    let reference = Database::builder()
        .create_with_backend(InMemoryBackend::new())
        .unwrap();
    let mut db = open(&path, true);
    for round in 0..300 {
        transaction(&mut rng, [&reference, &db]);
        if rng.chance(10) {
            let lo = rng.below(2000);
            let hi = lo + rng.below(500);
            assert_eq!(
                range(&db, lo, hi),
                range(&reference, lo, hi),
                "{name}: range scan, round {round}, seed {seed}"
            );
        }
        if rng.chance(3) {
            drop(db);
            db = open(&path, false);
        }
        if round % 50 == 49 {
            assert_eq!(
                contents(&db),
                contents(&reference),
                "{name}: contents at round {round}, seed {seed}"
            );
        }
    }
    assert_eq!(
        contents(&db),
        contents(&reference),
        "{name}: final contents, seed {seed}"
    );
    drop(db);
    let db = open(&path, false);
    assert_eq!(
        contents(&db),
        contents(&reference),
        "{name}: after the last reopen, seed {seed}"
    );
}

/// redb writes headers of any length, so it needs buffered (not direct) I/O.
fn wb(backend: Backend) -> impl Fn(&Path, bool) -> Database {
    move |path, create| {
        let cfg = Config::default().backend(backend);
        let file = if create {
            WriteBehindFile::create(path, &cfg)
        } else {
            WriteBehindFile::open(path, &cfg)
        };
        Database::builder()
            .create_with_backend(file.unwrap())
            .unwrap()
    }
}

#[test]
fn redb_on_writebehind_io_uring_matches_in_memory() {
    workload("io_uring", &wb(Backend::IoUring));
}

#[test]
fn redb_on_writebehind_threads_matches_in_memory() {
    workload("threads", &wb(Backend::Threads));
}

#[test]
fn redb_on_file_handle_matches_in_memory() {
    workload("FileHandle", &|path, create| {
        let cfg = Config::default();
        let file = if create {
            FileHandle::create(path, &cfg)
        } else {
            FileHandle::open(path, &cfg)
        };
        Database::builder()
            .create_with_backend(file.unwrap())
            .unwrap()
    });
}

/// redb shrinks its file during ordinary commits; the handle's length follows it.
#[test]
fn redb_shrinks_the_file_through_set_len() {
    let dir = common::tempdir();
    let path = dir.path().join("db.redb");
    let cfg = Config::default();
    let db = Database::builder()
        .create_with_backend(WriteBehindFile::create(&path, &cfg).unwrap())
        .unwrap();
    let mut lengths = Vec::new();
    for i in 0..400u64 {
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(TABLE).unwrap();
            t.insert(i, [7u8; 100].as_slice()).unwrap();
            if i % 3 == 0 {
                t.remove(i / 2).unwrap();
            }
        }
        tx.commit().unwrap();
        lengths.push(std::fs::metadata(&path).unwrap().len());
    }
    assert!(
        lengths.windows(2).any(|w| w[1] < w[0]),
        "redb never shrank the file: the test no longer exercises set_len"
    );
}

/// An I/O error reaches redb with its errno: a failed fsync fails the commit with `EIO`
/// (redb wraps it in its own error type; the `io::Error` inside keeps the errno), and the
/// handle stays failed for the commits after it.
#[cfg(feature = "fault-injection")]
#[test]
fn an_fsync_error_fails_the_commit_with_its_errno() {
    use writebehind::fault::FaultInjector;
    let dir = common::tempdir();
    let faults = FaultInjector::new();
    let cfg = Config::default().fault_injector(faults.clone());
    let file = WriteBehindFile::create(dir.path().join("db.redb"), &cfg).unwrap();
    let db = Database::builder().create_with_backend(file).unwrap();
    let commit = |i: u64| {
        let tx = db.begin_write().unwrap();
        tx.open_table(TABLE)
            .unwrap()
            .insert(i, [1u8; 100].as_slice())
            .unwrap();
        tx.commit()
    };
    commit(1).unwrap();
    faults.fail_all_syncs_from(0, libc::EIO);
    match commit(2) {
        Err(redb::CommitError::Storage(redb::StorageError::Io(e))) => {
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}")
        }
        other => panic!("expected the fsync's EIO, got {other:?}"),
    }
    let again = (|| -> Result<(), redb::Error> {
        let tx = db.begin_write()?;
        tx.open_table(TABLE)?.insert(3, [1u8; 100].as_slice())?;
        Ok(tx.commit()?)
    })();
    assert!(
        again.is_err(),
        "the handle took a commit after a failed fsync"
    );
}
