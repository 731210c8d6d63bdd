//! `--json`: every figure of every run, one self-contained object per run, in the schema
//! documented in docs/benchmarks.md (`schema` names its version).

use hdrhistogram::Histogram;
use serde::Serialize;

use super::cli::Stop;
use super::machine::Machine;
use super::redb::RedbFigures;
use super::run::{CellRun, Figures};

/// The schema version written into every object. Bump it when a field changes meaning
/// or disappears (adding fields keeps it).
pub const SCHEMA: &str = "writebehind-bench/1";

/// One run: what ran, where, and what it measured.
#[derive(Serialize)]
pub struct RunJson<'a> {
    pub schema: &'static str,
    pub started_at: &'a str,
    pub command: &'a str,
    pub machine: &'a Machine,
    pub config: ConfigJson,
    pub result: ResultJson,
}

/// The settings of the run.
#[derive(Serialize)]
pub struct ConfigJson {
    pub workload: &'static str,
    pub backend: &'static str,
    pub batch: Option<u64>,
    pub threads: u32,
    pub readers: u32,
    pub write_size: u64,
    pub file_size: u64,
    pub files: u32,
    pub duration_s: Option<f64>,
    pub ops: Option<u64>,
    pub direct: bool,
    pub force_every: u64,
    pub buffer_bytes: Option<u64>,
    pub preallocate: Option<u64>,
    pub repetition: u32,
    pub repeat: u32,
}

/// The outcome; the figures are present when `status` is `ok` or `interrupted`.
#[derive(Serialize)]
pub struct ResultJson {
    pub status: &'static str,
    pub error: Option<String>,
    #[serde(flatten)]
    pub figures: Option<FiguresJson>,
}

/// Every figure of a finished run.
#[derive(Serialize)]
pub struct FiguresJson {
    pub engine: &'static str,
    pub alignment: Option<u64>,
    pub ops: u64,
    pub ops_per_s: f64,
    pub loop_ops_per_s: f64,
    pub mb_per_s: f64,
    pub bytes_requested: u64,
    pub bytes_written: u64,
    pub loop_s: f64,
    pub final_force_s: f64,
    pub close_s: f64,
    pub drain_s: f64,
    pub total_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    pub cpu_s_per_gb: f64,
    pub forces: u64,
    pub fsyncs: u64,
    pub threads_peak: usize,
    pub write_ack_ns: Option<LatencyJson>,
    pub force_ns: Option<LatencyJson>,
    pub reads: Option<ReadsJson>,
    pub writebehind: Option<WriteBehindJson>,
    pub redb: Option<RedbJson>,
}

/// The redb workload: commits, inserts, and redb's calls to its storage backend.
#[derive(Serialize)]
pub struct RedbJson {
    pub batch: u64,
    pub commits: u64,
    pub commits_per_s: f64,
    pub inserts: u64,
    pub inserts_per_s: f64,
    pub commit_ns: Option<LatencyJson>,
    pub cpu_ns_per_commit: f64,
    pub backend_calls: BackendCallsJson,
}

/// redb's calls to its storage backend during the loop, and the time inside them.
#[derive(Serialize)]
pub struct BackendCallsJson {
    pub writes: u64,
    pub write_bytes: u64,
    pub write_total_ns: u64,
    pub syncs: u64,
    pub sync_total_ns: u64,
    pub sync_data_ns: Option<LatencyJson>,
    pub set_lens: u64,
    pub set_len_total_ns: u64,
    pub reads: u64,
    pub read_total_ns: u64,
}

fn redb_json(f: &Figures, r: &RedbFigures) -> RedbJson {
    let c = &r.calls;
    RedbJson {
        batch: r.batch,
        commits: f.m.ops,
        commits_per_s: f.loop_ops_per_s(),
        inserts: f.m.ops * r.batch,
        inserts_per_s: f.loop_ops_per_s() * r.batch as f64,
        commit_ns: LatencyJson::of(&f.m.ack),
        cpu_ns_per_commit: (f.cpu.user + f.cpu.sys).as_nanos() as f64 / f.m.ops.max(1) as f64,
        backend_calls: BackendCallsJson {
            writes: c.writes,
            write_bytes: c.write_bytes,
            write_total_ns: c.write_ns,
            syncs: c.syncs,
            sync_total_ns: c.sync_ns,
            sync_data_ns: LatencyJson::of(&r.sync),
            set_lens: c.set_lens,
            set_len_total_ns: c.set_len_ns,
            reads: c.reads,
            read_total_ns: c.read_ns,
        },
    }
}

/// A latency distribution in nanoseconds.
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub struct LatencyJson {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub p99_99: u64,
    pub max: u64,
}

impl LatencyJson {
    /// The summary of `h`; `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<LatencyJson> {
        (!h.is_empty()).then(|| LatencyJson {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            p99_99: h.value_at_quantile(0.9999),
            max: h.max(),
        })
    }
}

/// The readers of the mixed workload.
#[derive(Serialize)]
pub struct ReadsJson {
    pub ops: u64,
    pub ops_per_s: f64,
    pub latency_ns: Option<LatencyJson>,
}

/// The write-behind handle's own statistics (`Stats` from `close`).
#[derive(Serialize)]
pub struct WriteBehindJson {
    pub write_ops: u64,
    pub blocks_per_write_mean: f64,
    pub blocks_per_write_max: u64,
    pub fsyncs: u64,
    pub forces_served: u64,
    pub backpressure_waits: u64,
    pub backpressure_wait_ns: u64,
    pub short_writes: u64,
    pub retries: u64,
    pub cancelled_fsyncs: u64,
    pub leader_syncs: u64,
    pub bytes_preallocated: u64,
    /// `io_uring_enter` calls of the engine, and those that submitted (0 on threads).
    pub engine_enters: u64,
    pub engine_submits: u64,
    pub submit_to_complete_ns: Option<LatencyJson>,
    pub handle_write_ack_ns: Option<LatencyJson>,
    pub handle_force_ns: Option<LatencyJson>,
    /// Means of `Stats::writes_in_flight_at_force` and `Stats::queue_while_forcing`
    /// (the handle's writes in flight as a force began, and over the time forces waited).
    pub writes_in_flight_at_force_mean: f64,
    pub queue_while_forcing_mean: f64,
}

fn figures_json(f: &Figures) -> FiguresJson {
    FiguresJson {
        engine: f.engine,
        alignment: f.alignment,
        ops: f.m.ops,
        ops_per_s: f.ops_per_s(),
        loop_ops_per_s: f.loop_ops_per_s(),
        mb_per_s: f.mb_per_s(),
        bytes_requested: f.m.bytes_requested,
        bytes_written: f.bytes_written(),
        loop_s: f.m.loop_time.as_secs_f64(),
        final_force_s: f.final_force.as_secs_f64(),
        close_s: f.close.as_secs_f64(),
        drain_s: f.drain().as_secs_f64(),
        total_s: f.total().as_secs_f64(),
        cpu_user_s: f.cpu.user.as_secs_f64(),
        cpu_sys_s: f.cpu.sys.as_secs_f64(),
        cpu_s_per_gb: f.cpu_s_per_gb(),
        forces: f.m.forces,
        fsyncs: f.fsyncs(),
        threads_peak: f.threads_peak,
        write_ack_ns: LatencyJson::of(&f.m.ack),
        force_ns: LatencyJson::of(&f.m.force),
        reads: (f.m.reads > 0).then(|| ReadsJson {
            ops: f.m.reads,
            ops_per_s: f.m.reads as f64 / f.m.loop_time.as_secs_f64().max(1e-9),
            latency_ns: LatencyJson::of(&f.m.read),
        }),
        writebehind: f.stats.as_ref().map(|s| WriteBehindJson {
            write_ops: s.write_ops,
            blocks_per_write_mean: s.coalescing(),
            blocks_per_write_max: s.blocks_per_write.max(),
            fsyncs: s.fsyncs,
            forces_served: s.forces_served,
            backpressure_waits: s.backpressure_waits,
            backpressure_wait_ns: s.backpressure_wait_ns,
            short_writes: s.short_writes,
            retries: s.retries,
            cancelled_fsyncs: s.cancelled_fsyncs,
            leader_syncs: s.leader_syncs,
            bytes_preallocated: s.bytes_preallocated,
            engine_enters: s.engine_enters,
            engine_submits: s.engine_submits,
            submit_to_complete_ns: LatencyJson::of(&s.submit_to_complete_ns),
            handle_write_ack_ns: LatencyJson::of(&s.write_ack_ns),
            handle_force_ns: LatencyJson::of(&s.force_ns),
            writes_in_flight_at_force_mean: s.writes_in_flight_at_force.mean(),
            queue_while_forcing_mean: s.queue_while_forcing.mean(),
        }),
        redb: f.redb.as_ref().map(|r| redb_json(f, r)),
    }
}

/// The JSON object of one run.
pub fn run_json<'a>(
    run: &CellRun,
    repeat: u32,
    machine: &'a Machine,
    started_at: &'a str,
    command: &'a str,
) -> RunJson<'a> {
    let c = &run.cell;
    let (status, error, figures) = match &run.outcome {
        Ok(f) if f.m.interrupted => ("interrupted", None, Some(figures_json(f))),
        Ok(f) => ("ok", None, Some(figures_json(f))),
        Err(e) => ("error", Some(e.clone()), None),
    };
    RunJson {
        schema: SCHEMA,
        started_at,
        command,
        machine,
        config: ConfigJson {
            workload: c.workload.name(),
            backend: c.backend.name(),
            batch: (c.workload == super::cli::Workload::Redb).then_some(c.batch),
            threads: c.threads,
            readers: c.readers,
            write_size: c.write_size,
            file_size: c.file_size,
            files: c.files,
            duration_s: match c.stop {
                Stop::Duration(d) => Some(d.as_secs_f64()),
                Stop::Ops(_) => None,
            },
            ops: match c.stop {
                Stop::Ops(n) => Some(n),
                Stop::Duration(_) => None,
            },
            direct: c.direct,
            force_every: c.force_every,
            buffer_bytes: c.buffer_bytes,
            preallocate: c.preallocate,
            repetition: run.repetition,
            repeat,
        },
        result: ResultJson {
            status,
            error,
            figures,
        },
    }
}

/// The `--json` document: an array with one object per run.
pub fn document(
    runs: &[CellRun],
    repeat: u32,
    machine: &Machine,
    started_at: &str,
    command: &str,
) -> String {
    let objs: Vec<RunJson<'_>> = runs
        .iter()
        .map(|r| run_json(r, repeat, machine, started_at, command))
        .collect();
    serde_json::to_string_pretty(&objs).expect("plain data serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::cli::{CellConfig, Stop, Workload};
    use crate::bench::run::tests::{cell, machine};
    use serde_json::Value;
    use writebehind::{BackendKind, Stats};

    fn redb_figures() -> Figures {
        let mut f = crate::bench::report::tests::figures(1000, 300_000, 1000);
        let mut sync = crate::bench::workloads::latency_histogram();
        sync.record_n(200_000, 1000).unwrap();
        f.redb = Some(RedbFigures {
            batch: 100,
            calls: crate::bench::redb::BackendCalls {
                writes: 7000,
                write_bytes: 7000 * 4096,
                syncs: 1000,
                ..Default::default()
            },
            sync,
        });
        f
    }

    fn sample_runs() -> Vec<CellRun> {
        let mut f = crate::bench::report::tests::figures(1000, 2000, 3);
        f.m.reads = 10;
        f.m.read.record_n(5000, 10).unwrap();
        let mut stats = Stats::new(BackendKind::IoUring);
        stats.bytes_written = 1234;
        stats.blocks_per_write.record(16).unwrap();
        stats.submit_to_complete_ns.record(40_000).unwrap();
        stats.queue_while_forcing.record_n(100, 3).unwrap();
        stats.queue_while_forcing.record_n(0, 1).unwrap();
        f.stats = Some(stats);
        vec![
            CellRun {
                cell: cell(Workload::Mixed, Stop::Ops(1000)),
                repetition: 1,
                outcome: Ok(f),
            },
            CellRun {
                cell: CellConfig {
                    workload: Workload::Redb,
                    batch: 100,
                    ..cell(Workload::Log, Stop::Ops(1000))
                },
                repetition: 1,
                outcome: Ok(redb_figures()),
            },
            CellRun {
                cell: cell(
                    Workload::Log,
                    Stop::Duration(std::time::Duration::from_secs(2)),
                ),
                repetition: 1,
                outcome: Err("EIO".into()),
            },
        ]
    }

    /// Dotted paths of every field; a latency object (`*_ns`) contributes its own path
    /// and its leaf names (documented once for all latencies).
    fn keys(v: &Value, prefix: &str, out: &mut Vec<String>) {
        if let Value::Object(m) = v {
            for (k, child) in m {
                let path = format!("{prefix}{k}");
                out.push(path.clone());
                if k.ends_with("_ns") && child.is_object() {
                    out.extend(child.as_object().unwrap().keys().cloned());
                } else {
                    keys(child, &format!("{path}."), out);
                }
            }
        }
    }

    #[test]
    fn every_figure_is_there_with_the_right_type() {
        let dir = tempfile::tempdir().unwrap();
        let m = machine(dir.path());
        let doc = document(
            &sample_runs(),
            1,
            &m,
            "2026-01-01T00:00:00Z",
            "writebehind bench",
        );
        let v: Value = serde_json::from_str(&doc).unwrap();
        let runs = v.as_array().unwrap();
        assert_eq!(runs.len(), 3);
        let ok = &runs[0];
        assert_eq!(ok["schema"], SCHEMA);
        assert_eq!(ok["machine"]["kernel"], "Linux test");
        assert_eq!(ok["machine"]["cpus"], 2);
        assert!(ok["machine"]["filesystem"].is_string());
        assert!(ok["machine"]["dio_alignment"].is_null());
        assert_eq!(ok["config"]["workload"], "mixed");
        assert_eq!(ok["config"]["ops"], 1000);
        assert!(ok["config"]["duration_s"].is_null());
        let r = &ok["result"];
        assert_eq!(r["status"], "ok");
        for k in [
            "ops_per_s",
            "loop_ops_per_s",
            "mb_per_s",
            "loop_s",
            "final_force_s",
            "close_s",
            "drain_s",
            "total_s",
            "cpu_user_s",
            "cpu_sys_s",
            "cpu_s_per_gb",
        ] {
            assert!(r[k].as_f64().is_some_and(f64::is_finite), "{k}: {}", r[k]);
        }
        assert_eq!(r["ops"], 1000);
        assert_eq!(r["bytes_requested"], 1000 * 4096);
        assert_eq!(
            r["bytes_written"], 1234,
            "writebehind reports its own count"
        );
        assert_eq!(r["forces"], 3);
        for k in [
            "count", "min", "p50", "p90", "p99", "p99_9", "p99_99", "max",
        ] {
            assert!(r["write_ack_ns"][k].is_u64(), "write_ack_ns.{k}");
            assert!(r["force_ns"][k].is_u64(), "force_ns.{k}");
        }
        assert!(r["write_ack_ns"]["p99"].as_u64().unwrap().abs_diff(2000) < 10);
        assert_eq!(r["reads"]["ops"], 10);
        assert_eq!(r["writebehind"]["blocks_per_write_mean"], 16.0);
        assert_eq!(r["writebehind"]["queue_while_forcing_mean"], 75.0);
        assert_eq!(r["writebehind"]["writes_in_flight_at_force_mean"], 0.0);
        assert!(r["writebehind"]["submit_to_complete_ns"]["p50"].is_u64());
        assert!(
            r["writebehind"]["handle_force_ns"].is_null(),
            "empty histogram is null"
        );

        assert!(ok["result"]["redb"].is_null());
        assert!(ok["config"]["batch"].is_null());
        let redb = &runs[1];
        assert_eq!(redb["config"]["batch"], 100);
        let r = &redb["result"]["redb"];
        assert_eq!(r["commits"], 1000);
        assert_eq!(r["inserts"], 100_000);
        assert_eq!(r["backend_calls"]["writes"], 7000);
        assert_eq!(r["backend_calls"]["sync_data_ns"]["count"], 1000);
        assert!(r["commit_ns"]["p50"].as_u64().unwrap().abs_diff(300_000) < 1000);

        let failed = &runs[2]["result"];
        assert_eq!(failed["status"], "error");
        assert_eq!(failed["error"], "EIO");
        assert!(failed.get("ops_per_s").is_none());
        assert_eq!(runs[2]["config"]["duration_s"], 2.0);
    }

    #[test]
    fn docs_describe_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let m = machine(dir.path());
        let doc = document(&sample_runs(), 1, &m, "t", "c");
        let v: Value = serde_json::from_str(&doc).unwrap();
        let mut all = Vec::new();
        for run in v.as_array().unwrap() {
            keys(run, "", &mut all);
        }
        let docs = include_str!("../../../docs/benchmarks.md");
        let missing: Vec<&String> = all
            .iter()
            .filter(|k| !docs.contains(&format!("`{k}`")))
            .collect();
        assert!(missing.is_empty(), "docs/benchmarks.md lacks {missing:?}");
        assert!(docs.contains(SCHEMA));
    }
}
