//! redb, an engine nobody here wrote, under the power-loss test (feature `redb`).
//!
//! The child (`redb_power_child`) opens a redb database on the power-cut mount through
//! the handle under test (`WriteBehindFile` on io_uring or threads, buffered: redb writes
//! headers of any length; `FileHandle` as the baseline) and commits transactions forever
//! with redb's default durability (`Durability::Immediate`: a commit calls `sync_data`,
//! the handle's `force`, before it returns). Each transaction inserts, updates and deletes
//! keys with known values (`pattern(seed, len)`). The child announces each transaction
//! before its `commit()` (`X id key=len/seed key=- ...`) and each `commit()` that returned
//! Ok (`K id`); at its first error (the cut) it stops.
//!
//! After the cut the parent opens the backing file with redb itself (its own file
//! backend, integrity check on, repair allowed: a killed writer always leaves the file to
//! be repaired) and reads the whole table. It must equal the state after the last
//! acknowledged transaction, or after the one announced after it (whose commit may have
//! reached the disk before the cut, or returned an error that came too late): every
//! acknowledged transaction is present and whole, and none is partly visible. The
//! repaired file stays for the next child, as after a reboot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::*;

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("kv");
/// Keys are below this, so transactions update and delete what earlier ones wrote.
const KEYS: u64 = 500;

/// The table's contents: key → (value length, value seed).
type Contents = BTreeMap<u64, (usize, u64)>;

/// One change of a transaction: `Some((len, seed))` inserts `pattern(seed, len)`, `None`
/// deletes the key.
type Change = (u64, Option<(usize, u64)>);

fn format_changes(changes: &[Change]) -> String {
    let words: Vec<String> = changes
        .iter()
        .map(|(k, v)| match v {
            Some((len, seed)) => format!("{k}={len}/{seed}"),
            None => format!("{k}=-"),
        })
        .collect();
    words.join(" ")
}

fn parse_change(word: &str) -> Change {
    let (k, v) = word.split_once('=').expect("key=value");
    let value = (v != "-").then(|| {
        let (len, seed) = v.split_once('/').expect("len/seed");
        (len.parse().unwrap(), seed.parse().unwrap())
    });
    (k.parse().unwrap(), value)
}

fn apply(contents: &mut Contents, changes: &[Change]) {
    for &(k, v) in changes {
        match v {
            Some(v) => contents.insert(k, v),
            None => contents.remove(&k),
        };
    }
}

// ------------------------------------------------------------------ the child

/// The child: opens (or creates) the database and commits until killed. Does nothing
/// unless run by the parent.
#[test]
#[ignore = "child process of the redb power-loss tests"]
fn redb_power_child() {
    let Ok(path) = std::env::var("WB_POWER_PATH") else {
        eprintln!("skipped: runs only as a child of the redb tests in tests/power_loss.rs");
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let kind = kind_by_name(&var("WB_POWER_HANDLE"));
    let cfg = config(kind, mutation_by_name(&var("WB_POWER_MUTATION")));
    let seed: u64 = var("WB_POWER_SEED").parse().unwrap();
    let path = Path::new(&path);
    let builder = Database::builder();
    let db = if kind.backend.is_some() {
        let h = open_or_create(
            path,
            |p| WriteBehindFile::open(p, &cfg),
            |p| WriteBehindFile::create(p, &cfg),
        );
        builder.create_with_backend(h)
    } else {
        let h = open_or_create(
            path,
            |p| FileHandle::open(p, &cfg),
            |p| FileHandle::create(p, &cfg),
        );
        builder.create_with_backend(h)
    }
    .expect("open the database");
    if let Err(e) = commit_loop(&db, seed) {
        // The power is off: nothing more can commit. The parent kills us.
        eprintln!("stopped at {e}");
    }
    std::mem::forget(db); // no clean shutdown, as after a power cut
}

/// Commits random transactions until one fails.
fn commit_loop(db: &Database, seed: u64) -> Result<(), redb::Error> {
    say(format_args!("S"));
    let mut rng = Rng::new(seed);
    for id in 0u64.. {
        let changes: Vec<Change> = (0..rng.range(1, 30))
            .map(|_| {
                let key = rng.below(KEYS);
                let value = (!rng.chance(20)).then(|| {
                    // Now and then a value spanning pages.
                    let len = if rng.chance(5) {
                        rng.range(2000, 12_000)
                    } else {
                        rng.range(1, 300)
                    };
                    (len as usize, rng.next())
                });
                (key, value)
            })
            .collect();
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(TABLE)?;
            for (key, value) in &changes {
                match value {
                    Some((len, seed)) => {
                        t.insert(key, pattern(*seed, *len).as_slice())?;
                    }
                    None => {
                        t.remove(key)?;
                    }
                }
            }
        }
        say(format_args!("X {id} {}", format_changes(&changes)));
        tx.commit()?;
        say(format_args!("K {id}"));
    }
    Ok(())
}

// ------------------------------------------------------------------ the parent

/// What a series of cuts found.
#[derive(Default)]
struct RedbOutcome {
    cuts: usize,
    /// Acknowledged transactions before the cuts, per model.
    commits: [u64; 3],
    /// Cuts after which the transaction announced but not acknowledged was found
    /// committed.
    in_doubt_present: u64,
    /// Opens after a cut on which redb repaired the file.
    repairs: u64,
    /// The first cut whose database is not a state the transactions allow.
    failure: Option<String>,
}

/// Opens the database in the backing directory with redb's own file backend (checking
/// every page, repairing if needed) and reads the table. Returns it and whether redb
/// repaired the file, or why it cannot be read.
fn read_database(path: &Path) -> Result<(BTreeMap<u64, Vec<u8>>, bool), String> {
    let repaired = Arc::new(AtomicU64::new(0));
    let seen = repaired.clone();
    let mut builder = Database::builder();
    builder.set_check_integrity_on_open(true);
    builder.set_repair_callback(move |_| {
        seen.fetch_add(1, Ordering::Relaxed);
    });
    let db = builder
        .open(path)
        .map_err(|e| format!("redb cannot open the database: {e}"))?;
    let repaired = repaired.load(Ordering::Relaxed) > 0;
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let table = match tx.open_table(TABLE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((BTreeMap::new(), repaired)),
        Err(e) => return Err(format!("open the table: {e}")),
    };
    let mut out = BTreeMap::new();
    for entry in table.iter().map_err(|e| e.to_string())? {
        let (k, v) = entry.map_err(|e| e.to_string())?;
        out.insert(k.value(), v.value().to_vec());
    }
    Ok((out, repaired))
}

/// The first difference between the table read back and `want`, explained.
fn difference(got: &BTreeMap<u64, Vec<u8>>, want: &Contents) -> Option<String> {
    let keys: std::collections::BTreeSet<u64> = got.keys().chain(want.keys()).copied().collect();
    let differs = |k: &u64| match (got.get(k), want.get(k)) {
        (Some(g), Some(&(len, seed))) => *g != pattern(seed, len),
        (None, None) => false,
        _ => true,
    };
    let wrong: Vec<u64> = keys.into_iter().filter(differs).collect();
    let k = *wrong.first()?;
    Some(format!(
        "{} keys differ, the first {k}: found {}, expected {}",
        wrong.len(),
        got.get(&k)
            .map_or("nothing".into(), |v| format!("{} bytes", v.len())),
        want.get(&k).map_or("nothing".into(), |(len, seed)| format!(
            "pattern({seed}, {len})"
        )),
    ))
}

/// Replays the child's lines from `acked` (the state after the last acknowledged
/// transaction before this cut): returns the state after the last transaction
/// acknowledged now, the one announced after it (if any), and the number acknowledged.
fn replay_transactions(
    acked: &Contents,
    lines: &[String],
    what: &str,
) -> (Contents, Option<Contents>, u64) {
    let (mut acked, mut pending, mut count) = (acked.clone(), None, 0);
    let mut announced = None;
    for line in lines {
        let mut f = line.split(' ');
        match f.next() {
            Some("S") => {}
            Some("X") => {
                let id: u64 = f.next().unwrap().parse().unwrap();
                assert!(
                    pending.is_none(),
                    "{what}: transaction {id} announced before the last one was acknowledged"
                );
                let changes: Vec<Change> = f.map(parse_change).collect();
                let mut next = acked.clone();
                apply(&mut next, &changes);
                pending = Some(next);
                announced = Some(id);
            }
            Some("K") => {
                let id: u64 = f.next().unwrap().parse().unwrap();
                assert_eq!(Some(id), announced, "{what}: acknowledged out of order");
                acked = pending.take().expect("an announced transaction");
                count += 1;
            }
            _ => panic!("{what}: bad protocol line {line:?}"),
        }
    }
    (acked, pending, count)
}

/// Runs up to `cuts` power cuts of redb on `kind`, with `mutation` switched on in the
/// handle; stops at the first cut that leaves a state the transactions do not allow.
/// With `precreate` the parent creates the (empty) database before the first child, so
/// that every child opens it instead of creating it through the handle.
fn redb_cut_loop(
    kind: Kind,
    mutation: Option<Mutation>,
    cuts: usize,
    precreate: bool,
) -> Option<RedbOutcome> {
    let name = format!(
        "power_loss redb on {} mutation {}",
        kind.name,
        mutation_name(mutation)
    );
    let mut disk = Disk::new();
    let mut out = RedbOutcome::default();
    let mut acked = Contents::new();
    if precreate {
        Database::create(disk.backing.join(FILE)).expect("create the database");
    }
    let env = |disk: &Disk, child_seed| child_env(disk, kind, mutation, child_seed);
    let made = cut_series(
        &name,
        &mut disk,
        "with_redb::redb_power_child",
        &env,
        cuts,
        NORMAL_DELAYS,
        &mut |disk, cut| {
            let (now, pending, count) = replay_transactions(&acked, &cut.ended.lines, &cut.what);
            out.commits[cut.index % Model::ALL.len()] += count;
            let path = disk.backing.join(FILE);
            let found = read_database(&path).and_then(|(got, repaired)| {
                out.repairs += u64::from(repaired);
                match (difference(&got, &now), &pending) {
                    (None, _) => Ok(now.clone()),
                    (Some(_), Some(p)) if difference(&got, p).is_none() => {
                        out.in_doubt_present += 1;
                        Ok(p.clone())
                    }
                    (Some(d), _) => Err(format!(
                        "the table is not the state after the last acknowledged \
                         transaction{}: {d}",
                        if pending.is_some() {
                            " nor after the one announced after it"
                        } else {
                            ""
                        }
                    )),
                }
            });
            match found {
                Ok(state) => {
                    acked = state;
                    false
                }
                Err(e) => {
                    out.failure = Some(format!(
                        "{}: {e}; the child's stderr:\n{}",
                        cut.what, cut.ended.stderr
                    ));
                    true
                }
            }
        },
    )?;
    out.cuts = made;
    Some(out)
}

fn redb_power_loss(kind: Kind) {
    let started = Instant::now();
    let cuts = if common::stress() { STRESS_CUTS } else { CUTS };
    let Some(out) = redb_cut_loop(kind, None, cuts, false) else {
        return;
    };
    let total: u64 = out.commits.iter().sum();
    eprintln!(
        "power_loss redb on {}: {} cuts, {total} acknowledged commits verified {:?} \
         (none/pages/prefix), {} in-doubt commits found present, {} repairs on open; {:.1?}",
        kind.name,
        out.cuts,
        out.commits,
        out.in_doubt_present,
        out.repairs,
        started.elapsed()
    );
    if let Some(f) = out.failure {
        panic!("{f}");
    }
    for (model, commits) in Model::ALL.iter().zip(out.commits) {
        assert!(
            commits > 0,
            "redb on {}: no commit was acknowledged before the {model:?} cuts: nothing \
             was tested",
            kind.name
        );
    }
    assert!(
        out.repairs > 0,
        "redb on {}: redb never repaired the file after a cut: recovery was not tested",
        kind.name
    );
}

#[test]
fn power_loss_redb_on_wb_io_uring() {
    redb_power_loss(URING);
}

#[test]
fn power_loss_redb_on_wb_threads() {
    redb_power_loss(THREADS);
}

#[test]
fn power_loss_redb_on_file_handle() {
    redb_power_loss(FILE_HANDLE);
}

/// The same loop with the handle's syncs skipped (`Mutation::SkipSyncs`) must find an
/// acknowledged commit missing: the first "nothing survives" cut keeps none of them. (The
/// parent creates the database, so that the loss is a commit's, not the creation's.)
#[test]
fn skipped_syncs_fail_the_redb_test() {
    let started = Instant::now();
    let Some(out) = redb_cut_loop(URING, Some(Mutation::SkipSyncs), MUTATION_CUTS, true) else {
        return;
    };
    eprintln!(
        "power_loss redb with SkipSyncs: {} cuts, {:.1?}: {}",
        out.cuts,
        started.elapsed(),
        out.failure.as_deref().unwrap_or("not caught")
    );
    assert!(
        out.failure.is_some(),
        "redb on writebehind with SkipSyncs lost no acknowledged commit in {} cuts: the \
         test cannot see it",
        out.cuts
    );
}
