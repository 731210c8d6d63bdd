//! `writebehind bench --workload files`: every backend writes and forces many files, and
//! every run reports its thread peak.

use std::process::Command;

#[test]
fn files_workload_runs_on_every_backend_and_reports_threads_peak() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_writebehind"))
        .args([
            "bench",
            "--workload",
            "files",
            "--files",
            "4",
            "--threads",
            "2",
        ])
        .args(["--file-size", "1m", "--ops", "400", "--force-every", "50"])
        .args(["--json", "-"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let runs = v.as_array().expect("an array of runs");
    let mut backends: Vec<&str> = Vec::new();
    for r in runs {
        let (c, res) = (&r["config"], &r["result"]);
        assert_eq!(res["status"], "ok", "{r}");
        assert_eq!(c["workload"], "files");
        assert_eq!(c["files"], 4);
        assert_eq!(c["threads"], 2);
        assert_eq!(c["file_size"], 1 << 20);
        backends.push(c["backend"].as_str().unwrap());
        assert_eq!(res["ops"], 400);
        assert_eq!(res["bytes_requested"], 400 * 4096);
        assert!(res["ops_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(res["mb_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(res["write_ack_ns"]["count"], 400);
        // Each writer forces after its 50th..200th write, every dirtied file (1 to 4).
        let forces = res["forces"].as_u64().unwrap();
        assert!(
            (2 * 4..=2 * 4 * 4).contains(&forces),
            "{forces} forces: {r}"
        );
        assert_eq!(res["force_ns"]["count"], forces);
        assert!(res["cpu_user_s"].as_f64().unwrap() + res["cpu_sys_s"].as_f64().unwrap() > 0.0);
        // Main thread and two writers at least.
        let peak = res["threads_peak"].as_u64().unwrap();
        assert!(peak >= 3, "threads_peak {peak}: {r}");
        let stats = &res["writebehind"];
        match c["backend"].as_str().unwrap() {
            "writebehind" | "writebehind-threads" => {
                assert_eq!(
                    res["engine"],
                    if c["backend"] == "writebehind" {
                        "io_uring"
                    } else {
                        "threads"
                    }
                );
                // Every file's statistics summed: all of it written, and at least one
                // fsync per loop force of a file that had data (plus the final ones).
                assert!(stats["write_ops"].as_u64().unwrap() > 0, "{stats}");
                assert!(res["bytes_written"].as_u64().unwrap() >= 400 * 4096 / 4);
            }
            _ => {
                assert_eq!(res["engine"], "pwrite");
                assert!(stats.is_null());
                assert_eq!(res["bytes_written"], 400 * 4096);
                assert_eq!(
                    res["fsyncs"].as_u64().unwrap(),
                    forces + 4,
                    "one final per file"
                );
            }
        }
    }
    backends.sort();
    assert_eq!(
        backends,
        [
            "pwrite",
            "pwrite-direct",
            "writebehind",
            "writebehind-threads"
        ]
    );
    for label in ["files: 4 files", "threads"] {
        assert!(stderr.contains(label), "no {label:?} in:\n{stderr}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch files left behind"
    );
}
