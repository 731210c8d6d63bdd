//! `writebehind bench`: the workloads of docs/benchmarks.md against the write-behind
//! handle and the blocking writers, side by side, with a table, JSON and an SVG plot.
//!
//! Modules, one job each: [`cli`] (arguments and their checks), [`machine`] (what we run
//! on), [`scratch`] (the temporary file), [`backends`] (opening handles), [`workloads`]
//! (the threads), [`run`] (one timed run), [`report`] (the table), [`json`], [`plot`],
//! [`progress`], [`sys`] (the OS calls with `unsafe`), [`files`] (the many-files
//! workload), [`threads`] (the thread-count sampler).

pub mod backends;
pub mod cli;
pub mod files;
pub mod json;
pub mod machine;
pub mod plot;
pub mod progress;
pub mod redb;
pub mod report;
pub mod run;
pub mod scratch;
pub mod sys;
pub mod threads;
pub mod workloads;

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use hdrhistogram::Histogram;

use backends::Opened;
use cli::{fmt_size, BenchArgs, Cli, Command, Plan, UsageError, Workload};
use machine::Machine;
use progress::Progress;
use run::{run_cell, CellRun};

/// Exit code for bad command lines (as clap uses).
const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// Parses `args` (program name first) and runs the subcommand.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let command = command_line(&args);
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    match cli.command {
        Command::Bench(a) => bench(a, &command),
    }
}

fn usage(e: UsageError) -> ExitCode {
    eprintln!("error: {e}");
    eprintln!("\nFor more information, try 'writebehind bench --help'.");
    ExitCode::from(EXIT_USAGE)
}

/// The command line as one shell-like string, for the report.
fn command_line(args: &[OsString]) -> String {
    let mut parts = vec!["writebehind".to_string()];
    for a in args.iter().skip(1) {
        let s = a.to_string_lossy();
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
            parts.push(format!("'{}'", s.replace('\'', r"'\''")));
        } else {
            parts.push(s.into_owned());
        }
    }
    parts.join(" ")
}

fn bench(args: BenchArgs, command: &str) -> ExitCode {
    let mut plan = match Plan::from_args(args) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let machine = match Machine::probe(&plan.dir) {
        Ok(m) => m,
        Err(e) => return usage(UsageError(format!("--dir {}: {e}", plan.dir.display()))),
    };
    plan.dir = machine.dir.clone(); // absolute, for messages and the report
    if let Err(e) = plan.check_alignment(machine.dio_alignment, &machine.filesystem) {
        return usage(e);
    }
    let need = plan
        .cells()
        .iter()
        .filter(|c| c.workload != Workload::Log)
        .map(|c| c.file_size)
        .max()
        .unwrap_or(0)
        + (64 << 20);
    if machine.free_bytes < need {
        return usage(UsageError(format!(
            "--dir {} has {} free; the runs need about {} (lower --file-size)",
            machine.dir.display(),
            fmt_size(machine.free_bytes),
            fmt_size(need)
        )));
    }
    sys::catch_interrupts();
    let started = machine::utc_now();
    let runs = run_all(&plan, &machine);

    // With `--json -` standard output carries the JSON alone; the table goes to stderr.
    let json_to_stdout = plan.json.as_ref().is_some_and(|p| p.as_os_str() == "-");
    let mut out: Box<dyn Write> = if json_to_stdout {
        Box::new(io::stderr().lock())
    } else {
        Box::new(io::stdout().lock())
    };
    let rows = report::rows(&runs);
    let _ = write!(
        out,
        "{}",
        report::header(&plan, &machine, &started, command)
    );
    let _ = writeln!(out);
    let _ = write!(out, "{}", report::table(&rows));
    let _ = writeln!(out, "\n{}", report::LEGEND);
    let mut failed = runs.iter().any(|r| r.outcome.is_err());
    if let Some(path) = &plan.json {
        let doc = json::document(&runs, plan.repeat, &machine, &started, command);
        let written = if json_to_stdout {
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(doc.as_bytes())
                .and_then(|()| stdout.flush())
        } else {
            fs::write(path, doc)
        };
        match written {
            Ok(()) if json_to_stdout => {}
            Ok(()) => {
                let _ = writeln!(out, "JSON: {}", path.display());
            }
            Err(e) => {
                eprintln!("error: writing --json {}: {e}", path.display());
                failed = true;
            }
        }
    }
    if let Some(path) = &plan.plot {
        match fs::write(path, plot_svg(&plan, &runs)) {
            Ok(()) => {
                let _ = writeln!(out, "plot: {}", path.display());
            }
            Err(e) => {
                eprintln!("error: writing --plot {}: {e}", path.display());
                failed = true;
            }
        }
    }
    let _ = out.flush();
    if sys::interrupted() {
        eprintln!("interrupted: the runs above were cut short or skipped");
        ExitCode::from(EXIT_INTERRUPTED)
    } else if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Every repetition of every (workload, backend), repetitions outermost so that noise
/// from the shared machine spreads evenly over the backends.
fn run_all(plan: &Plan, machine: &Machine) -> Vec<CellRun> {
    let cells = plan.cells();
    let total = cells.len() * plan.repeat as usize;
    let progress = Progress::new(total);
    let open = |c: &cli::CellConfig, p: &std::path::Path, _presized: bool| Opened::open(c, p);
    let mut runs = Vec::with_capacity(total);
    'reps: for repetition in 1..=plan.repeat {
        for cell in &cells {
            if sys::interrupted() {
                break 'reps;
            }
            let index = runs.len();
            let mut label = format!("{} / {}", cell.workload_label(), cell.backend.name());
            if plan.repeat > 1 {
                label += &format!(" (repetition {repetition}/{})", plan.repeat);
            }
            progress.show(index, &label, None);
            let shown = |f| progress.show(index, &label, Some(f));
            let sampler = threads::Sampler::start();
            let outcome = match cell.workload {
                Workload::Redb => redb::run(cell, machine, &shown),
                Workload::Files | Workload::Flood => files::run(cell, machine, &shown),
                _ => run_cell(cell, machine, &shown, &open),
            };
            let threads_peak = sampler.map(threads::Sampler::stop);
            let outcome = match (outcome, threads_peak) {
                (Ok(f), Ok(peak)) => Ok(run::Figures {
                    threads_peak: peak,
                    ..f
                }),
                (Ok(_), Err(e)) => Err(format!("sampling /proc/self/task: {e}")),
                (Err(e), _) => Err(e.to_string()),
            };
            runs.push(CellRun {
                cell: cell.clone(),
                repetition,
                outcome,
            });
        }
    }
    progress.clear();
    runs
}

/// The write-ack distributions (redb: commit latency), one panel per workload (redb: per
/// batch size), one curve per backend (all repetitions merged).
fn plot_svg(plan: &Plan, runs: &[CellRun]) -> String {
    let mut panels_of: Vec<(Workload, u64)> = Vec::new();
    for c in plan.cells() {
        if !panels_of.contains(&(c.workload, c.batch)) {
            panels_of.push((c.workload, c.batch));
        }
    }
    let panels: Vec<plot::Panel> = panels_of
        .into_iter()
        .map(|(w, batch)| plot::Panel {
            title: match w {
                Workload::Redb => format!("redb, {batch} inserts per commit"),
                w => w.name().to_string(),
            },
            series: plan
                .backends
                .iter()
                .filter(|&&b| w != Workload::Redb || b != cli::BackendName::PwriteDirect)
                .map(|&b| {
                    let mut hist: Histogram<u64> = workloads::latency_histogram();
                    for f in runs
                        .iter()
                        .filter(|r| {
                            r.cell.workload == w && r.cell.batch == batch && r.cell.backend == b
                        })
                        .filter_map(|r| r.outcome.as_ref().ok())
                    {
                        let _ = hist.add(&f.m.ack);
                    }
                    plot::Series {
                        label: b.name().to_string(),
                        color: plot::color_for(b.name()),
                        hist,
                    }
                })
                .collect(),
        })
        .collect();
    plot::svg("write acknowledgement latency by percentile", &panels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_quoted_like_a_shell() {
        let args: Vec<OsString> = ["writebehind", "bench", "--dir", "/tmp/a b", "--direct"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            command_line(&args),
            "writebehind bench --dir '/tmp/a b' --direct"
        );
    }

    #[test]
    fn usage_errors_exit_with_2() {
        let run = |a: &[&str]| main(a.iter().map(OsString::from).collect());
        assert_eq!(
            run(&["writebehind", "bench", "--threads", "0"]),
            ExitCode::from(2)
        );
        assert_eq!(
            run(&["writebehind", "bench", "--workload", "nope"]),
            ExitCode::from(2)
        );
        assert_eq!(
            run(&[
                "writebehind",
                "bench",
                "--workload",
                "files",
                "--files",
                "0"
            ]),
            ExitCode::from(2)
        );
        assert_eq!(
            run(&["writebehind", "bench", "--dir", "/nonexistent/x"]),
            ExitCode::from(2)
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(
            run(&[
                "writebehind",
                "bench",
                "--dir",
                d,
                "--file-size",
                "100",
                "--block-size",
                "4k"
            ]),
            ExitCode::from(2)
        );
        assert_eq!(
            run(&["writebehind", "bench", "--dir", d, "--file-size", "1000t"]),
            ExitCode::from(2),
            "not enough space"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing left behind"
        );
    }

    /// The whole command on the blocking backends (the write-behind ones are covered by
    /// the runner tests with a test handle): exit 0, JSON and SVG written, no file left.
    #[test]
    fn a_short_run_on_the_blocking_backends_writes_json_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let json = out.path().join("r.json");
        let svg = out.path().join("r.svg");
        let args = [
            "writebehind",
            "bench",
            "--backend",
            "pwrite",
            "--backend",
            "pwrite-direct",
            "--ops",
            "200",
            "--threads",
            "2",
            "--file-size",
            "1m",
            "--force-every",
            "50",
            "--repeat",
            "2",
            "--dir",
            dir.path().to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ];
        let code = main(args.iter().map(OsString::from).collect());
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "scratch file left behind"
        );
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
        let runs = v.as_array().unwrap();
        // redb runs on pwrite only (not pwrite-direct), with 1 and 100 inserts per commit.
        assert_eq!(
            runs.len(),
            (4 * 2 + 2) * 2,
            "workloads x backends x repetitions"
        );
        for r in runs {
            assert_eq!(r["result"]["status"], "ok", "{r}");
            assert_eq!(r["result"]["ops"], 200);
            assert_eq!(r["result"]["engine"], "pwrite");
            let wrote = r["result"]["bytes_written"].as_u64().unwrap();
            let requested = r["result"]["bytes_requested"].as_u64().unwrap();
            if r["config"]["workload"] == "redb" {
                assert!(wrote > requested, "redb writes pages and headers: {r}");
            } else {
                assert_eq!(wrote, requested);
            }
        }
        let log = runs
            .iter()
            .find(|r| r["config"]["workload"] == "log")
            .unwrap();
        assert_eq!(log["result"]["forces"], 200, "a force per commit");
        let s = fs::read_to_string(&svg).unwrap();
        assert_eq!(s.matches("<polyline").count(), 4 * 2 + 2);
    }
}
