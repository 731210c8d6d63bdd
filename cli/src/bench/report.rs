//! The text table: one row per (workload, backend), the median of each figure over the
//! repetitions.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::cli::{fmt_size, BackendName, Plan, Stop, Workload};
use super::machine::Machine;
use super::redb::RedbFigures;
use super::run::{CellRun, Figures};

/// The medians of one (workload, backend) over its repetitions.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub workload: Workload,
    /// Inserts per commit (redb only, else 0).
    pub batch: u64,
    pub backend: BackendName,
    /// Repetitions that finished / that ran.
    pub ok: usize,
    pub runs: usize,
    /// The first error, when no repetition finished.
    pub error: Option<String>,
    /// Ctrl-C cut a repetition short.
    pub interrupted: bool,
    pub ops_per_s: f64,
    pub mb_per_s: f64,
    pub ack: [f64; 4],
    /// p50, p99, max of force; `None` when the workload made no force in its loop.
    pub force: Option<[f64; 3]>,
    pub drain_s: f64,
    pub bytes_written: f64,
    pub cpu_s_per_gb: f64,
    /// Reads/s, p50, p99, max of the mixed readers.
    pub reads: Option<[f64; 4]>,
    /// The redb workload's figures.
    pub redb: Option<RedbRow>,
    /// The most threads of any repetition (see `Figures::threads_peak`).
    pub threads_peak: usize,
}

/// The medians of a redb (workload, batch, backend).
#[derive(Clone, Debug, PartialEq)]
pub struct RedbRow {
    /// Commits and inserts per second of the loop (a commit is durable when it returns).
    pub commits_per_s: f64,
    pub inserts_per_s: f64,
    /// Time in `commit()`: p50, p99, p99.9, max.
    pub commit: [f64; 4],
    /// redb's `write` calls to its backend per commit, and their time per commit.
    pub writes_per_commit: f64,
    pub write_ns_per_commit: f64,
    /// `sync_data` calls per commit, and the median time of one.
    pub syncs_per_commit: f64,
    pub sync_p50: f64,
    /// User + system CPU of the process per commit.
    pub cpu_ns_per_commit: f64,
}

fn redb_row(ok: &[&Figures]) -> Option<RedbRow> {
    let with: Vec<(&Figures, &RedbFigures)> = ok
        .iter()
        .filter_map(|f| f.redb.as_ref().map(|r| (*f, r)))
        .collect();
    let med = |f: &dyn Fn(&Figures, &RedbFigures) -> f64| {
        median(with.iter().map(|(a, b)| f(a, b)).collect())
    };
    let per_commit = |f: &Figures, x: u64| x as f64 / f.m.ops.max(1) as f64;
    Some(RedbRow {
        commits_per_s: med(&|f, _| f.loop_ops_per_s())?,
        inserts_per_s: med(&|f, r| f.loop_ops_per_s() * r.batch as f64)?,
        commit: [
            med(&|f, _| q(&f.m.ack, 0.5))?,
            med(&|f, _| q(&f.m.ack, 0.99))?,
            med(&|f, _| q(&f.m.ack, 0.999))?,
            med(&|f, _| f.m.ack.max() as f64)?,
        ],
        writes_per_commit: med(&|f, r| per_commit(f, r.calls.writes))?,
        write_ns_per_commit: med(&|f, r| per_commit(f, r.calls.write_ns))?,
        syncs_per_commit: med(&|f, r| per_commit(f, r.calls.syncs))?,
        sync_p50: med(&|_, r| q(&r.sync, 0.5))?,
        cpu_ns_per_commit: med(&|f, _| per_commit(f, (f.cpu.user + f.cpu.sys).as_nanos() as u64))?,
    })
}

/// The median of `v` (mean of the middle two for an even count); `None` when empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn q(h: &Histogram<u64>, quantile: f64) -> f64 {
    h.value_at_quantile(quantile) as f64
}

/// Groups `runs` by (workload, batch, backend), in first-seen order, and takes medians.
pub fn rows(runs: &[CellRun]) -> Vec<Row> {
    let mut keys: Vec<(Workload, u64, BackendName)> = Vec::new();
    for r in runs {
        let k = (r.cell.workload, r.cell.batch, r.cell.backend);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(workload, batch, backend)| {
            let group: Vec<&CellRun> = runs
                .iter()
                .filter(|r| {
                    (r.cell.workload, r.cell.batch, r.cell.backend) == (workload, batch, backend)
                })
                .collect();
            let ok: Vec<&Figures> = group
                .iter()
                .filter_map(|r| r.outcome.as_ref().ok())
                .collect();
            let med = |f: &dyn Fn(&Figures) -> f64| {
                median(ok.iter().map(|x| f(x)).collect()).unwrap_or(0.0)
            };
            let with_forces: Vec<&&Figures> = ok.iter().filter(|f| !f.m.force.is_empty()).collect();
            let fmed =
                |f: &dyn Fn(&Figures) -> f64| median(with_forces.iter().map(|x| f(x)).collect());
            let with_reads: Vec<&&Figures> = ok.iter().filter(|f| f.m.reads > 0).collect();
            let rmed =
                |f: &dyn Fn(&Figures) -> f64| median(with_reads.iter().map(|x| f(x)).collect());
            Row {
                workload,
                batch,
                backend,
                ok: ok.len(),
                runs: group.len(),
                error: if ok.is_empty() {
                    group.iter().find_map(|r| r.outcome.as_ref().err().cloned())
                } else {
                    None
                },
                interrupted: ok.iter().any(|f| f.m.interrupted),
                ops_per_s: med(&|f| f.ops_per_s()),
                mb_per_s: med(&|f| f.mb_per_s()),
                ack: [
                    med(&|f| q(&f.m.ack, 0.5)),
                    med(&|f| q(&f.m.ack, 0.99)),
                    med(&|f| q(&f.m.ack, 0.999)),
                    med(&|f| f.m.ack.max() as f64),
                ],
                force: match (
                    fmed(&|f| q(&f.m.force, 0.5)),
                    fmed(&|f| q(&f.m.force, 0.99)),
                    fmed(&|f| f.m.force.max() as f64),
                ) {
                    (Some(a), Some(b), Some(c)) => Some([a, b, c]),
                    _ => None,
                },
                drain_s: med(&|f| f.drain().as_secs_f64()),
                bytes_written: med(&|f| f.bytes_written() as f64),
                cpu_s_per_gb: med(&|f| f.cpu_s_per_gb()),
                reads: match (
                    rmed(&|f| f.m.reads as f64 / f.m.loop_time.as_secs_f64().max(1e-9)),
                    rmed(&|f| q(&f.m.read, 0.5)),
                    rmed(&|f| q(&f.m.read, 0.99)),
                    rmed(&|f| f.m.read.max() as f64),
                ) {
                    (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
                    _ => None,
                },
                redb: redb_row(&ok),
                threads_peak: ok.iter().map(|f| f.threads_peak).max().unwrap_or(0),
            }
        })
        .collect()
}

/// A latency in nanoseconds for people: `850ns`, `12.3µs`, `4.12ms`, `1.20s`.
pub fn fmt_ns(ns: f64) -> String {
    let (v, unit) = if ns < 1e3 {
        return format!("{ns:.0}ns");
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    let digits = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    format!("{v:.digits$}{unit}")
}

/// A rate with thousands separators: `85,772`; below 100 with one decimal.
pub fn fmt_rate(x: f64) -> String {
    if x < 100.0 {
        return format!("{x:.1}");
    }
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Decimal bytes: `512 B`, `12.3 MB`, `1.07 GB`.
pub fn fmt_bytes(b: f64) -> String {
    if b < 1e3 {
        return format!("{b:.0} B");
    }
    let (v, unit) = if b < 1e6 {
        (b / 1e3, "kB")
    } else if b < 1e9 {
        (b / 1e6, "MB")
    } else {
        (b / 1e9, "GB")
    };
    let digits = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    format!("{v:.digits$} {unit}")
}

/// Lays out cells in columns: the first `left` columns left-aligned, the rest right.
fn render(header: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (c, cell) in cells.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            if c > 0 {
                s.push_str("  ");
            }
            if c < left {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    let rules: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out += &line(rules.iter().map(String::as_str).collect());
    for r in rows {
        out += &line(r.iter().map(|s| s.as_str()).collect());
    }
    out
}

/// The header lines: when, what, on which machine, with which settings.
pub fn header(plan: &Plan, machine: &Machine, started: &str, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "writebehind bench, {started}: {command}");
    let _ = writeln!(s, "machine: {}", machine.summary());
    let stop = match plan.stop {
        Stop::Duration(d) => format!("{} s of writes per run", d.as_secs_f64()),
        Stop::Ops(n) => format!("{n} writes per run"),
    };
    let reps = if plan.repeat > 1 {
        format!("; medians of {} repetitions", plan.repeat)
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "settings: {stop}{reps}; block {}, file {}, log record {}; writebehind O_DIRECT: {}; \
         force every {} writes in pages/mixed/files",
        fmt_size(plan.block_size),
        fmt_size(plan.file_size),
        fmt_size(plan.record_size.unwrap_or(0)),
        if plan.direct { "yes" } else { "no (--direct)" },
        plan.force_every.unwrap_or(super::cli::DEFAULT_FORCE_EVERY),
    );
    if plan.workloads.contains(&Workload::Files) {
        let _ = writeln!(
            s,
            "files: {} files sharing the file size, {} writers (writebehind: one Engine)",
            plan.files,
            plan.threads.unwrap_or(super::cli::DEFAULT_FILES_THREADS),
        );
    }
    if plan.workloads.contains(&Workload::Flood) {
        let _ = writeln!(
            s,
            "flood: file A written sequentially by one writer (writes/s, MB/s, ack), file B \
             one committer appending a page + force (force p50/p99); writebehind: one Engine"
        );
    }
    if plan.workloads.contains(&Workload::Redb) {
        let batches: Vec<String> = plan.batches.iter().map(u64::to_string).collect();
        let _ = writeln!(
            s,
            "redb: 100-byte values, {} inserts per commit, default durability",
            batches.join(" and ")
        );
    }
    s
}

/// The results table and, for mixed, the readers' table, and for redb its own.
pub fn table(rows: &[Row]) -> String {
    let (redb, blocks): (Vec<Row>, Vec<Row>) = rows
        .iter()
        .cloned()
        .partition(|r| r.workload == Workload::Redb);
    let mut out = String::new();
    if !blocks.is_empty() {
        out += &block_table(&blocks);
    }
    if !redb.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out += &redb_table(&redb);
    }
    out
}

/// Marks a backend name with failed or interrupted repetitions.
fn backend_cell(r: &Row) -> String {
    let mut s = r.backend.name().to_string();
    if r.ok < r.runs {
        s += &format!(" ({}/{} ok)", r.ok, r.runs);
    }
    if r.interrupted {
        s += " (interrupted)";
    }
    s
}

/// The redb runs: commits, their latency, and where a commit's time goes.
fn redb_table(rows: &[Row]) -> String {
    let header = [
        "redb",
        "backend",
        "commits/s",
        "inserts/s",
        "commit p50",
        "p99",
        "p99.9",
        "max",
        "writes/commit",
        "in writes",
        "syncs/commit",
        "sync p50",
        "CPU/commit",
        "threads",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![format!("redb/{}", r.batch), backend_cell(r)];
            match (&r.error, &r.redb) {
                (Some(e), _) => c.push(format!("failed: {e}")),
                (None, None) => c.push("no figures".into()),
                (None, Some(x)) => {
                    c.push(fmt_rate(x.commits_per_s));
                    c.push(fmt_rate(x.inserts_per_s));
                    c.extend(x.commit.iter().map(|&v| fmt_ns(v)));
                    c.push(format!("{:.2}", x.writes_per_commit));
                    c.push(fmt_ns(x.write_ns_per_commit));
                    c.push(format!("{:.2}", x.syncs_per_commit));
                    c.push(fmt_ns(x.sync_p50));
                    c.push(fmt_ns(x.cpu_ns_per_commit));
                    c.push(r.threads_peak.to_string());
                }
            }
            c
        })
        .collect();
    render(&header, &cells, 2)
}

/// The block workloads (pages, seq, log, mixed) and, for mixed, the readers.
fn block_table(rows: &[Row]) -> String {
    let header = [
        "workload",
        "backend",
        "ops/s",
        "MB/s",
        "ack p50",
        "p99",
        "p99.9",
        "max",
        "force p50",
        "p99",
        "max",
        "drain",
        "written",
        "CPU s/GB",
        "threads",
    ];
    let mut cells = Vec::new();
    for r in rows {
        let mut c = vec![r.workload.name().to_string(), r.backend.name().to_string()];
        if let Some(e) = &r.error {
            c.push(format!("failed: {e}"));
            cells.push(c);
            continue;
        }
        c.push(fmt_rate(r.ops_per_s));
        c.push(format!("{:.1}", r.mb_per_s));
        c.extend(r.ack.iter().map(|&v| fmt_ns(v)));
        match r.force {
            Some(f) => c.extend(f.iter().map(|&v| fmt_ns(v))),
            None => c.extend(["-", "-", "-"].map(String::from)),
        }
        c.push(format!("{:.2}s", r.drain_s));
        c.push(fmt_bytes(r.bytes_written));
        c.push(format!("{:.2}", r.cpu_s_per_gb));
        c.push(r.threads_peak.to_string());
        c[1] = backend_cell(r);
        cells.push(c);
    }
    let mut out = render(&header, &cells, 2);
    let reads: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|r| {
            r.reads.map(|[rate, p50, p99, max]| {
                vec![
                    r.workload.name().to_string(),
                    r.backend.name().to_string(),
                    fmt_rate(rate),
                    fmt_ns(p50),
                    fmt_ns(p99),
                    fmt_ns(max),
                ]
            })
        })
        .collect();
    if !reads.is_empty() {
        out.push('\n');
        out += &render(
            &["readers", "backend", "reads/s", "read p50", "p99", "max"],
            &reads,
            2,
        );
    }
    out
}

/// What the columns mean, printed under the table.
pub const LEGEND: &str = "\
ops/s, MB/s: writes (log: commits) and requested bytes per second over the whole run, \
i.e. until the data is durable and the handle closed (loop + drain). ack: time inside \
write()/append(). force: time inside force() during the loop. drain: final force + close \
after the last write. written: bytes the backend wrote to the file (writebehind: its \
Stats, after coalescing). CPU s/GB: user+sys of the process per 10^9 requested bytes. \
threads: the most threads the process had during the run (io_uring's iou-* workers not \
counted). files: --threads writers over --files pre-sized files, each forcing the files \
it dirtied every --force-every writes: one after the other on pwrite*, together (force_async) on writebehind (force: one sample per file forced, from the set's start).
redb/N: N inserts of 100 bytes per commit, default durability (each commit syncs before \
it returns). commits/s, inserts/s: during the loop. commit: time inside commit(). \
writes/commit, syncs/commit: redb's write and sync_data calls to its storage backend; \
in writes: their time per commit; sync p50: the time of one sync_data. CPU/commit: \
user+sys of the process, open to close, per commit.";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::cli::Stop;
    use crate::bench::run::tests::cell;
    use crate::bench::run::CellRun;
    use crate::bench::sys::CpuTime;
    use crate::bench::workloads::{latency_histogram, Measured};
    use std::time::Duration;

    pub fn figures(ops: u64, ack_ns: u64, forces: u64) -> Figures {
        let mut ack = latency_histogram();
        ack.record_n(ack_ns, ops).unwrap();
        let mut force = latency_histogram();
        if forces > 0 {
            force.record_n(100_000, forces).unwrap();
        }
        Figures {
            engine: "pwrite",
            alignment: None,
            m: Measured {
                ops,
                bytes_requested: ops * 4096,
                forces,
                ack,
                force,
                reads: 0,
                read: latency_histogram(),
                loop_time: Duration::from_secs(1),
                interrupted: false,
            },
            final_force: Duration::from_millis(500),
            close: Duration::from_millis(500),
            cpu: CpuTime {
                user: Duration::from_millis(100),
                sys: Duration::from_millis(300),
            },
            stats: None,
            redb: None,
            final_forces: 1,
            threads_peak: 3,
        }
    }

    #[test]
    fn medians_are_medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn rows_take_the_median_of_each_figure_and_keep_errors() {
        let c = cell(Workload::Pages, Stop::Ops(1));
        let runs = vec![
            CellRun {
                cell: c.clone(),
                repetition: 1,
                outcome: Ok(figures(1000, 1000, 1)),
            },
            CellRun {
                cell: c.clone(),
                repetition: 2,
                outcome: Ok(figures(3000, 5000, 1)),
            },
            CellRun {
                cell: c.clone(),
                repetition: 3,
                outcome: Err("disk on fire".into()),
            },
        ];
        let rows = rows(&runs);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.ok, r.runs, r.error.clone()), (2, 3, None));
        // 1000 and 3000 ops over 2 s each: 500 and 1500 ops/s, median 1000.
        assert!((r.ops_per_s - 1000.0).abs() < 1e-9, "{}", r.ops_per_s);
        assert!((r.ack[1] - 3000.0).abs() / 3000.0 < 0.01, "{:?}", r.ack);
        assert!(r.force.is_some());
        assert!((r.drain_s - 1.0).abs() < 1e-9);
        // 0.4 CPU s over 4.096 MB and 12.288 MB.
        let expect = (0.4 / 0.004096 + 0.4 / 0.012288) / 2.0;
        assert!((r.cpu_s_per_gb - expect).abs() < 1e-6);
        let t = table(&rows);
        assert!(t.contains("pages") && t.contains("pwrite (2/3 ok)"), "{t}");

        let failed = vec![CellRun {
            cell: c,
            repetition: 1,
            outcome: Err("disk on fire".into()),
        }];
        let t = table(&super::rows(&failed));
        assert!(t.contains("failed: disk on fire"), "{t}");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_ns(850.0), "850ns");
        assert_eq!(fmt_ns(12_345.0), "12.3µs");
        assert_eq!(fmt_ns(4_120_000.0), "4.12ms");
        assert_eq!(fmt_ns(1.2e9), "1.20s");
        assert_eq!(fmt_rate(85_772.4), "85,772");
        assert_eq!(fmt_rate(1_234_567.0), "1,234,567");
        assert_eq!(fmt_rate(512.0), "512");
        assert_eq!(fmt_rate(7.25), "7.2");
        assert_eq!(fmt_bytes(512.0), "512 B");
        assert_eq!(fmt_bytes(12_300_000.0), "12.3 MB");
        assert_eq!(fmt_bytes(1_073_741_824.0), "1.07 GB");
    }

    #[test]
    fn columns_line_up() {
        let t = render(
            &["a", "num"],
            &[
                vec!["long name".into(), "1".into()],
                vec!["x".into(), "12345".into()],
            ],
            1,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "a            num");
        assert_eq!(lines[2], "long name      1");
        assert_eq!(lines[3], "x          12345");
    }
}
