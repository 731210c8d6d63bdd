//! Command-line parsing (clap) and the checks that turn arguments into a [`Plan`].
//!
//! Checks that need no file system happen in [`Plan::from_args`]; the ones that need the
//! direct-I/O alignment of `--dir` happen in [`Plan::check_alignment`]. Both fail with a
//! [`UsageError`] (exit code 2).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `writebehind`: tools around the write-behind file handle.
#[derive(Parser, Debug)]
#[command(name = "writebehind", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run workloads against the write-behind handle and the blocking writers, side by
    /// side on the same device, and print one table.
    ///
    /// With no flags: every workload against every backend, 2 s each, in a temporary file
    /// in the current directory (removed afterwards).
    Bench(BenchArgs),
}

/// What a benchmark does to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum Workload {
    /// Random block writes over a pre-sized file, a force every K writes (checkpoints).
    Pages,
    /// Sequential block writes (a bulk load), wrapping around at the file size.
    Seq,
    /// N threads appending records, each followed by a force (transaction commits).
    Log,
    /// `pages` plus reader threads reading random pages.
    Mixed,
    /// redb, one writer inserting 100-byte values, `--batch` inserts per commit.
    Redb,
    /// `--threads` writers writing blocks at random offsets of `--files` pre-sized files,
    /// each forcing the files it dirtied every K writes (many tables of one engine).
    /// Not in the default set: name it with `--workload files`.
    Files,
    /// Isolation under a flood: file A written sequentially by one writer as fast as it
    /// can, file B by one committer appending a page and forcing it, in a loop. The table
    /// shows A's writes (writes/s, MB/s, ack) and B's forces (force p50/p99); writebehind
    /// runs both files on one Engine, pwrite opens a `FileHandle` per file. `--threads`
    /// and `--files` do not apply. Not in the default set: `--workload flood`.
    Flood,
}

impl Workload {
    /// Every workload, in table order.
    pub const ALL: [Workload; 5] = [
        Workload::Pages,
        Workload::Seq,
        Workload::Log,
        Workload::Mixed,
        Workload::Redb,
    ];

    /// The name used on the command line, in the table and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Pages => "pages",
            Workload::Seq => "seq",
            Workload::Log => "log",
            Workload::Mixed => "mixed",
            Workload::Redb => "redb",
            Workload::Files => "files",
            Workload::Flood => "flood",
        }
    }

    /// Whether this workload writes the handle itself (redb writes through its own
    /// pages and headers, of any size: no block size, no O_DIRECT).
    pub fn writes_blocks(self) -> bool {
        self != Workload::Redb
    }

    /// Whether the file is written once before timing (random overwrites need it).
    pub fn presized(self) -> bool {
        matches!(self, Workload::Pages | Workload::Mixed | Workload::Files)
    }
}

/// Which writer is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum BackendName {
    /// `WriteBehindFile` on io_uring (O_DIRECT with `--direct`).
    #[value(name = "writebehind")]
    WriteBehind,
    /// `WriteBehindFile` on its thread fallback (O_DIRECT with `--direct`).
    #[value(name = "writebehind-threads")]
    WriteBehindThreads,
    /// The blocking buffered `FileHandle` (pwrite + fdatasync).
    #[value(name = "pwrite")]
    Pwrite,
    /// The blocking `FileHandle` with O_DIRECT, always.
    #[value(name = "pwrite-direct")]
    PwriteDirect,
}

impl BackendName {
    /// Every backend, in table order.
    pub const ALL: [BackendName; 4] = [
        BackendName::WriteBehind,
        BackendName::WriteBehindThreads,
        BackendName::Pwrite,
        BackendName::PwriteDirect,
    ];

    /// The name used on the command line, in the table and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            BackendName::WriteBehind => "writebehind",
            BackendName::WriteBehindThreads => "writebehind-threads",
            BackendName::Pwrite => "pwrite",
            BackendName::PwriteDirect => "pwrite-direct",
        }
    }

    /// Whether this backend opens the file with O_DIRECT, given `--direct`.
    pub fn uses_direct(self, direct_flag: bool) -> bool {
        match self {
            BackendName::WriteBehind | BackendName::WriteBehindThreads => direct_flag,
            BackendName::Pwrite => false,
            BackendName::PwriteDirect => true,
        }
    }

    /// Whether this is a `WriteBehindFile` (it has `Stats`).
    pub fn is_writebehind(self) -> bool {
        matches!(
            self,
            BackendName::WriteBehind | BackendName::WriteBehindThreads
        )
    }
}

/// Arguments of `writebehind bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Workload to run (repeatable; default: all of pages, seq, log, mixed, redb; files
    /// only when named).
    #[arg(long = "workload", value_name = "W", value_enum)]
    pub workloads: Vec<Workload>,

    /// Backend to measure (repeatable; default: all).
    #[arg(long = "backend", value_name = "B", value_enum)]
    pub backends: Vec<BackendName>,

    /// Writer threads (default: 8 for log, 4 for files, 1 for the others).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    /// Inserts per commit of the redb workload (repeatable; default: runs 1 and 100).
    #[arg(long = "batch", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batches: Vec<u64>,

    /// Reader threads of the mixed workload.
    #[arg(long, value_name = "N", default_value = "2",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub readers: u32,

    /// Files the files workload writes; --file-size is split evenly over them.
    #[arg(long, value_name = "N", default_value = "64",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub files: u32,

    /// Bytes per write of pages, seq, mixed and files (suffixes k, m, g: powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "4k", value_parser = parse_size_arg)]
    pub block_size: u64,

    /// Bytes per appended record of log (default 512, raised to the direct-I/O
    /// alignment when a direct backend runs log).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub record_size: Option<u64>,

    /// Size of the file pages and mixed write over (seq wraps around at it).
    #[arg(long, value_name = "SIZE", default_value = "1g", value_parser = parse_size_arg)]
    pub file_size: u64,

    /// How long each (workload, backend) writes, e.g. 2, 2s, 500ms, 1m (default 2s).
    #[arg(long, value_name = "TIME", value_parser = parse_duration_arg, conflicts_with = "ops")]
    pub duration: Option<Duration>,

    /// Instead of --duration: write operations per (workload, backend), over all threads.
    #[arg(long, value_name = "N", value_parser = parse_count_arg)]
    pub ops: Option<u64>,

    /// Open the writebehind backends with O_DIRECT (pwrite-direct always is).
    #[arg(long)]
    pub direct: bool,

    /// Force after every K writes of each writer thread in pages and mixed (0: never;
    /// default 1000). Given explicitly, it applies to seq too.
    #[arg(long, value_name = "K")]
    pub force_every: Option<u64>,

    /// Buffer budget of the writebehind backends (default: the library's, 64 MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub buffer_bytes: Option<u64>,

    /// Preallocation window of the writebehind backends (`Config::preallocate`; 0: off;
    /// default: the library's, 1 MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub preallocate: Option<u64>,

    /// Run every (workload, backend) this many times, interleaved; the table shows medians.
    #[arg(long, value_name = "N", default_value = "1",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,

    /// Write every figure of every run as JSON (see docs/benchmarks.md for the schema).
    /// `-` writes it to standard output, and the table then goes to standard error.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Write an SVG of the write-acknowledgement latency distributions.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,

    /// Directory for the temporary file (removed afterwards).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// Bad command-line input: reported with exit code 2.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a (workload, backend) run stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    Duration(Duration),
    /// After this many write operations (over all writer threads).
    Ops(u64),
}

/// The default time per (workload, backend): 16 runs and their set-up fit in well under
/// 3 minutes on 2 cores.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(2);
/// Default `--force-every` of pages and mixed.
pub const DEFAULT_FORCE_EVERY: u64 = 1000;
/// Default log record size.
pub const DEFAULT_RECORD_SIZE: u64 = 512;
/// Default writer threads of log.
pub const DEFAULT_LOG_THREADS: u32 = 8;
/// Default writer threads of files.
pub const DEFAULT_FILES_THREADS: u32 = 4;
/// Default inserts per commit of redb: one run with each.
pub const DEFAULT_BATCHES: [u64; 2] = [1, 100];
/// Largest block or record accepted (a write larger than this is not a "block").
pub const MAX_BLOCK: u64 = 64 << 20;

/// Validated settings of one `bench` invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub workloads: Vec<Workload>,
    pub backends: Vec<BackendName>,
    /// Inserts per commit of the redb runs, one run each.
    pub batches: Vec<u64>,
    pub threads: Option<u32>,
    pub readers: u32,
    pub files: u32,
    pub block_size: u64,
    /// `None`: the default, settled by [`Plan::check_alignment`].
    pub record_size: Option<u64>,
    pub file_size: u64,
    pub stop: Stop,
    pub direct: bool,
    pub force_every: Option<u64>,
    pub buffer_bytes: Option<u64>,
    pub preallocate: Option<u64>,
    pub repeat: u32,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub dir: PathBuf,
}

/// The settings of one (workload, backend) run.
#[derive(Clone, Debug, PartialEq)]
pub struct CellConfig {
    pub workload: Workload,
    pub backend: BackendName,
    /// Inserts per commit (redb only, else 0).
    pub batch: u64,
    /// Writer threads.
    pub threads: u32,
    /// Reader threads (mixed only, else 0).
    pub readers: u32,
    /// Bytes per write (the record size for log).
    pub write_size: u64,
    /// Bytes of the file region written (a multiple of `write_size`; 0 for log); for
    /// files, over all the files together (`files` times a multiple of `write_size`).
    pub file_size: u64,
    /// Files written (files workload only, else 1).
    pub files: u32,
    pub stop: Stop,
    /// Whether this backend opens the file with O_DIRECT.
    pub direct: bool,
    /// Force after every this many writes per thread (0: never; log forces every record).
    pub force_every: u64,
    pub buffer_bytes: Option<u64>,
    /// `Config::preallocate` of a writebehind backend (`None`: the library's default).
    pub preallocate: Option<u64>,
}

impl CellConfig {
    /// The workload as the table and the progress line name it: `redb/N` for redb with
    /// N inserts per commit.
    pub fn workload_label(&self) -> String {
        match self.workload {
            Workload::Redb => format!("redb/{}", self.batch),
            w => w.name().to_string(),
        }
    }
}

impl Plan {
    /// Checks what can be checked without touching the file system.
    pub fn from_args(a: BenchArgs) -> Result<Plan, UsageError> {
        let bad = |m: String| Err(UsageError(m));
        let workloads = dedup(if a.workloads.is_empty() {
            Workload::ALL.to_vec()
        } else {
            a.workloads
        });
        let backends = dedup(if a.backends.is_empty() {
            BackendName::ALL.to_vec()
        } else {
            a.backends
        });
        if a.block_size == 0 || a.block_size > MAX_BLOCK {
            return bad(format!(
                "--block-size {} must be between 1 byte and 64 MiB",
                a.block_size
            ));
        }
        if let Some(r) = a.record_size {
            if r == 0 || r > MAX_BLOCK {
                return bad(format!(
                    "--record-size {r} must be between 1 byte and 64 MiB"
                ));
            }
        }
        if workloads == [Workload::Redb] && backends == [BackendName::PwriteDirect] {
            return bad(
                "redb runs on writebehind, writebehind-threads and pwrite, not \
                 pwrite-direct (it writes headers of any length)"
                    .into(),
            );
        }
        let batches = dedup(if a.batches.is_empty() {
            DEFAULT_BATCHES.to_vec()
        } else {
            a.batches
        });
        let paged = workloads
            .iter()
            .any(|w| w.writes_blocks() && *w != Workload::Log);
        if paged && a.file_size < a.block_size {
            return bad(format!(
                "--file-size {} is smaller than one block (--block-size {})",
                fmt_size(a.file_size),
                fmt_size(a.block_size)
            ));
        }
        let stop = match (a.duration, a.ops) {
            (_, Some(0)) => return bad("--ops must be at least 1".into()),
            (_, Some(n)) => Stop::Ops(n),
            (Some(d), None) if d.is_zero() => {
                return bad("--duration must be longer than zero".into())
            }
            (Some(d), None) => Stop::Duration(d),
            (None, None) => Stop::Duration(DEFAULT_DURATION),
        };
        if let Some(b) = a.buffer_bytes {
            if b == 0 {
                return bad("--buffer-bytes must be at least 1 byte".into());
            }
        }
        for (flag, path) in [("--json", &a.json), ("--plot", &a.plot)] {
            if let Some(p) = path.as_ref().filter(|p| p.as_os_str() != "-") {
                check_output_path(flag, p)?;
            }
        }
        Ok(Plan {
            workloads,
            backends,
            batches,
            threads: a.threads,
            readers: a.readers,
            files: a.files,
            block_size: a.block_size,
            record_size: a.record_size,
            file_size: a.file_size,
            stop,
            direct: a.direct,
            force_every: a.force_every,
            buffer_bytes: a.buffer_bytes,
            preallocate: a.preallocate,
            repeat: a.repeat,
            json: a.json,
            plot: a.plot,
            dir: a.dir,
        })
    }

    /// Checks the write sizes against the direct-I/O alignment of `--dir` and settles the
    /// default record size. `alignment` is `None` when the file system refuses O_DIRECT.
    pub fn check_alignment(&mut self, alignment: Option<u64>, fs: &str) -> Result<(), UsageError> {
        let direct_users: Vec<&str> = self
            .backends
            .iter()
            .filter(|b| b.uses_direct(self.direct))
            .map(|b| b.name())
            .collect();
        let blocks = self.workloads.iter().any(|w| w.writes_blocks());
        if direct_users.is_empty() || !blocks {
            self.record_size.get_or_insert(DEFAULT_RECORD_SIZE);
            return Ok(());
        }
        let Some(align) = alignment else {
            return Err(UsageError(format!(
                "the {fs} file system of {} refuses O_DIRECT, which {} need{}; \
                 pick backends without it (and drop --direct) or another --dir",
                self.dir.display(),
                direct_users.join(", "),
                if direct_users.len() == 1 { "s" } else { "" },
            )));
        };
        let who = format!(
            "{} {} O_DIRECT",
            direct_users.join(", "),
            if direct_users.len() == 1 {
                "uses"
            } else {
                "use"
            }
        );
        let paged = self
            .workloads
            .iter()
            .any(|w| w.writes_blocks() && *w != Workload::Log);
        if paged && !self.block_size.is_multiple_of(align) {
            return Err(UsageError(format!(
                "--block-size {} is not a multiple of the direct-I/O alignment {align} of {} \
                 ({who})",
                self.block_size,
                self.dir.display()
            )));
        }
        if self.workloads.contains(&Workload::Log) {
            match self.record_size {
                Some(r) if !r.is_multiple_of(align) => {
                    return Err(UsageError(format!(
                        "--record-size {r} is not a multiple of the direct-I/O alignment \
                         {align} of {} ({who})",
                        self.dir.display()
                    )))
                }
                Some(_) => {}
                None => self.record_size = Some(DEFAULT_RECORD_SIZE.div_ceil(align) * align),
            }
        }
        self.record_size.get_or_insert(DEFAULT_RECORD_SIZE);
        Ok(())
    }

    /// The settings of each (workload, backend) run, in table order; redb once per batch
    /// size, and not on pwrite-direct.
    pub fn cells(&self) -> Vec<CellConfig> {
        let mut out = Vec::new();
        for &workload in &self.workloads {
            let batches = if workload == Workload::Redb {
                self.batches.clone()
            } else {
                vec![0]
            };
            for batch in batches {
                for &backend in &self.backends {
                    if workload == Workload::Redb && backend == BackendName::PwriteDirect {
                        continue;
                    }
                    out.push(CellConfig {
                        batch,
                        ..self.cell(workload, backend)
                    });
                }
            }
        }
        out
    }

    fn cell(&self, workload: Workload, backend: BackendName) -> CellConfig {
        if workload == Workload::Redb {
            return CellConfig {
                workload,
                backend,
                batch: 0,
                threads: 1,
                readers: 0,
                write_size: super::redb::VALUE_SIZE,
                file_size: 0,
                files: 1,
                stop: self.stop,
                direct: false,
                force_every: 1, // every commit syncs
                buffer_bytes: if backend.is_writebehind() {
                    self.buffer_bytes
                } else {
                    None
                },
                preallocate: self.preallocate.filter(|_| backend.is_writebehind()),
            };
        }

        let log = workload == Workload::Log;
        let write_size = if log {
            self.record_size.unwrap_or(DEFAULT_RECORD_SIZE)
        } else {
            self.block_size
        };
        let force_every = match workload {
            Workload::Log => 1,
            Workload::Seq => self.force_every.unwrap_or(0),
            // A never forces; B forces every append (`workloads::committer`).
            Workload::Flood => 0,
            Workload::Pages | Workload::Mixed | Workload::Files => {
                self.force_every.unwrap_or(DEFAULT_FORCE_EVERY)
            }
            Workload::Redb => unreachable!("redb cells are made above"),
        };
        CellConfig {
            workload,
            backend,
            batch: 0,
            threads: if workload == Workload::Flood {
                2 // A's writer and B's committer
            } else {
                self.threads.unwrap_or(match workload {
                    Workload::Log => DEFAULT_LOG_THREADS,
                    Workload::Files => DEFAULT_FILES_THREADS,
                    _ => 1,
                })
            },
            readers: if workload == Workload::Mixed {
                self.readers
            } else {
                0
            },
            write_size,
            file_size: if log {
                0
            } else if workload == Workload::Files {
                let per_file = (self.file_size / u64::from(self.files) / write_size).max(1);
                per_file * write_size * u64::from(self.files)
            } else {
                self.file_size / write_size * write_size
            },
            files: match workload {
                Workload::Files => self.files,
                Workload::Flood => 2,
                _ => 1,
            },
            stop: self.stop,
            direct: backend.uses_direct(self.direct),
            force_every,
            buffer_bytes: if backend.is_writebehind() {
                self.buffer_bytes
            } else {
                None
            },
            preallocate: self.preallocate.filter(|_| backend.is_writebehind()),
        }
    }
}

/// An output file must be creatable: its directory exists and it is not a directory.
fn check_output_path(flag: &str, p: &std::path::Path) -> Result<(), UsageError> {
    if p.is_dir() {
        return Err(UsageError(format!("{flag} {} is a directory", p.display())));
    }
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !parent.is_dir() {
        return Err(UsageError(format!(
            "{flag} {}: directory {} does not exist",
            p.display(),
            parent.display()
        )));
    }
    Ok(())
}

fn dedup<T: PartialEq + Copy>(v: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// Parses a byte size: digits with an optional k, m, g or t suffix (powers of 1024,
/// case-insensitive, optionally followed by `b` or `ib`): `4096`, `4k`, `1m`, `1GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, suffix) = lower.split_at(digits_end);
    if num.is_empty() {
        return Err(format!(
            "'{s}' is not a size: expected digits with an optional k, m, g or t suffix"
        ));
    }
    let shift = match suffix {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "'{s}': unknown size suffix '{suffix}' (use k, m, g or t)"
            ))
        }
    };
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is too large"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s)
}

/// Parses a duration: a number (seconds, may have a fraction) with an optional unit
/// `ms`, `s` or `m`: `2`, `2.5s`, `500ms`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        _ => {
            return Err(format!(
                "'{s}': unknown time unit '{unit}' (use ms, s or m)"
            ))
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (examples: 2, 2.5s, 500ms, 1m)"))?;
    let secs = v * scale;
    if !secs.is_finite() || secs > 86_400.0 {
        return Err(format!("'{s}' is longer than a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn parse_count_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.replace("size", "count"))
}

/// A byte count for people: `4 KiB`, `1 GiB`, `1536 B`.
pub fn fmt_size(n: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (name, shift) in UNITS {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {name}", n >> shift);
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut v = vec!["writebehind", "bench"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map(|c| match c.command {
            Command::Bench(b) => b,
        })
    }

    fn plan(args: &[&str]) -> Result<Plan, UsageError> {
        Plan::from_args(parse(args).expect("clap accepts"))
    }

    #[test]
    fn sizes_take_binary_suffixes_and_reject_garbage() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("512b"), Ok(512));
        for bad in ["", "k", "4x", "-1", "1.5g", "4 k k", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size("16777216t").is_err(), "overflow accepted");
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "s", "2h", "1e9", "abc", "100000000"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn no_flags_means_every_workload_against_every_backend() {
        let mut p = plan(&[]).unwrap();
        p.check_alignment(Some(512), "ext4").unwrap();
        assert_eq!(p.workloads, Workload::ALL.to_vec());
        assert_eq!(p.backends, BackendName::ALL.to_vec());
        assert_eq!(p.stop, Stop::Duration(DEFAULT_DURATION));
        let cells = p.cells();
        assert_eq!(
            cells.len(),
            16 + 2 * 3,
            "redb: batches 1 and 100, not on pwrite-direct"
        );
        let redb: Vec<_> = cells
            .iter()
            .filter(|c| c.workload == Workload::Redb)
            .map(|c| (c.batch, c.backend, c.threads, c.direct))
            .collect();
        assert_eq!(
            redb,
            [
                (1, BackendName::WriteBehind, 1, false),
                (1, BackendName::WriteBehindThreads, 1, false),
                (1, BackendName::Pwrite, 1, false),
                (100, BackendName::WriteBehind, 1, false),
                (100, BackendName::WriteBehindThreads, 1, false),
                (100, BackendName::Pwrite, 1, false),
            ]
        );
        assert_eq!(cells[16].workload_label(), "redb/1");
        let log = cells.iter().find(|c| c.workload == Workload::Log).unwrap();
        assert_eq!((log.threads, log.write_size, log.force_every), (8, 512, 1));
        let pages = &cells[0];
        assert_eq!((pages.threads, pages.write_size), (1, 4096));
        assert_eq!((pages.file_size, pages.force_every), (1 << 30, 1000));
        let seq = cells.iter().find(|c| c.workload == Workload::Seq).unwrap();
        assert_eq!(seq.force_every, 0);
        let mixed = cells
            .iter()
            .find(|c| c.workload == Workload::Mixed)
            .unwrap();
        assert_eq!(mixed.readers, 2);
        // Only pwrite-direct is direct without --direct.
        let direct: Vec<_> = cells[..4].iter().map(|c| c.direct).collect();
        assert_eq!(direct, [false, false, false, true]);
    }

    #[test]
    fn repeated_flags_select_and_dedup() {
        let p = plan(&[
            "--workload",
            "seq",
            "--workload",
            "pages",
            "--workload",
            "seq",
            "--backend",
            "pwrite",
            "--backend",
            "writebehind-threads",
            "--threads",
            "3",
            "--block-size",
            "64k",
            "--file-size",
            "8m",
            "--ops",
            "1000",
            "--direct",
            "--force-every",
            "10",
        ])
        .unwrap();
        assert_eq!(p.workloads, [Workload::Seq, Workload::Pages]);
        assert_eq!(
            p.backends,
            [BackendName::Pwrite, BackendName::WriteBehindThreads]
        );
        assert_eq!(p.stop, Stop::Ops(1000));
        let c = p.cells();
        assert_eq!(
            c[0].force_every, 10,
            "an explicit --force-every applies to seq"
        );
        assert_eq!(c[0].threads, 3);
        assert!(!c[0].direct, "pwrite stays buffered with --direct");
        assert!(c[1].direct, "writebehind-threads follows --direct");
    }

    #[test]
    fn clap_rejects_unknown_names_zero_threads_and_conflicts() {
        let e = parse(&["--workload", "random"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidValue);
        assert!(e.to_string().contains("pages"), "lists the choices: {e}");
        let e = parse(&["--backend", "fio"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidValue);
        let e = parse(&["--threads", "0"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        let e = parse(&["--duration", "1s", "--ops", "5"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
        let e = parse(&["--block-size", "4q"]).unwrap_err();
        assert!(e.to_string().contains("suffix"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn plan_rejects_nonsense_with_a_reason() {
        let msg = |args: &[&str]| plan(args).unwrap_err().0;
        assert!(
            msg(&["--file-size", "1k", "--block-size", "4k"]).contains("smaller than one block")
        );
        assert!(msg(&["--block-size", "0"]).contains("--block-size"));
        assert!(msg(&["--block-size", "1g"]).contains("64 MiB"));
        assert!(msg(&["--ops", "0"]).contains("--ops"));
        assert!(msg(&["--duration", "0s"]).contains("--duration"));
        assert!(msg(&["--buffer-bytes", "0"]).contains("--buffer-bytes"));
        assert!(msg(&["--json", "/nonexistent-dir/x.json"]).contains("does not exist"));
        assert!(msg(&["--plot", "/"]).contains("is a directory"));
        // log alone does not care about the file size.
        assert!(plan(&["--workload", "log", "--file-size", "1"]).is_ok());
    }

    #[test]
    fn alignment_checks_only_direct_backends() {
        let mut p = plan(&["--block-size", "1000", "--backend", "pwrite"]).unwrap();
        assert!(p.check_alignment(Some(512), "ext4").is_ok());
        assert!(
            p.check_alignment(None, "tmpfs").is_ok(),
            "buffered needs no O_DIRECT"
        );

        let mut p = plan(&[
            "--block-size",
            "1000",
            "--backend",
            "writebehind",
            "--direct",
        ])
        .unwrap();
        let e = p.check_alignment(Some(512), "ext4").unwrap_err().0;
        assert!(
            e.contains("multiple of the direct-I/O alignment 512"),
            "{e}"
        );

        let mut p = plan(&["--block-size", "1000", "--backend", "pwrite-direct"]).unwrap();
        assert!(p.check_alignment(Some(512), "ext4").is_err());

        let mut p = plan(&["--backend", "pwrite-direct"]).unwrap();
        let e = p.check_alignment(None, "fuse").unwrap_err().0;
        assert!(
            e.contains("refuses O_DIRECT") && e.contains("pwrite-direct"),
            "{e}"
        );

        let mut p = plan(&["--workload", "log", "--record-size", "100", "--direct"]).unwrap();
        assert!(p
            .check_alignment(Some(512), "ext4")
            .unwrap_err()
            .0
            .contains("--record-size"));
    }

    #[test]
    fn default_record_size_rises_to_the_alignment_only_when_needed() {
        let mut p = plan(&["--workload", "log"]).unwrap();
        p.check_alignment(Some(4096), "xfs").unwrap();
        assert_eq!(p.record_size, Some(4096));
        let mut p = plan(&["--workload", "log", "--backend", "pwrite"]).unwrap();
        p.check_alignment(Some(4096), "xfs").unwrap();
        assert_eq!(p.record_size, Some(512));
    }

    #[test]
    fn redb_takes_batches_and_stays_buffered() {
        let mut p = plan(&[
            "--workload",
            "redb",
            "--batch",
            "10",
            "--batch",
            "10",
            "--batch",
            "1000",
            "--direct",
        ])
        .unwrap();
        // redb alone needs no O_DIRECT, even where the file system refuses it.
        p.check_alignment(None, "tmpfs").unwrap();
        let c = p.cells();
        assert_eq!(c.len(), 2 * 3);
        assert!(c.iter().all(|c| !c.direct && c.write_size == 100));
        assert_eq!(c[0].batch, 10);
        assert_eq!(c[3].batch, 1000);
        assert_eq!(c[3].workload_label(), "redb/1000");
        let msg = |args: &[&str]| plan(args).unwrap_err().0;
        assert!(msg(&["--workload", "redb", "--backend", "pwrite-direct"]).contains("redb"));
        let e = parse(&["--batch", "0"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn file_size_is_rounded_down_to_whole_blocks() {
        let mut p = plan(&[
            "--workload",
            "pages",
            "--file-size",
            "10k",
            "--block-size",
            "4k",
        ])
        .unwrap();
        p.check_alignment(Some(512), "ext4").unwrap();
        assert_eq!(p.cells()[0].file_size, 8192);
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(fmt_size(4096), "4 KiB");
        assert_eq!(fmt_size(1 << 30), "1 GiB");
        assert_eq!(fmt_size(1536), "1536 B");
    }
}
