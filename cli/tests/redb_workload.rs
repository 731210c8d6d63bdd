//! `writebehind bench --workload redb`: redb commits on every backend it runs on, with the
//! default batch sizes (1 and 100 inserts per commit), in the table and the JSON.

use std::process::Command;

#[test]
fn redb_workload_commits_on_every_backend_with_both_batch_sizes() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_writebehind"))
        .args(["bench", "--workload", "redb", "--ops", "30", "--json", "-"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let runs = v.as_array().expect("an array of runs");
    let mut seen = Vec::new();
    for r in runs {
        let (c, res) = (&r["config"], &r["result"]);
        assert_eq!(res["status"], "ok", "{r}");
        assert_eq!(c["workload"], "redb");
        let batch = c["batch"].as_u64().expect("batch");
        seen.push((batch, c["backend"].as_str().unwrap().to_string()));
        let redb = &res["redb"];
        assert_eq!(redb["commits"], 30, "{r}");
        assert_eq!(redb["inserts"], 30 * batch);
        assert!(redb["commits_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(redb["commit_ns"]["count"], 30);
        // Default durability: every commit syncs, and writes its pages first.
        let calls = &redb["backend_calls"];
        assert!(calls["syncs"].as_u64().unwrap() >= 30, "{calls}");
        assert!(calls["writes"].as_u64().unwrap() >= 30, "{calls}");
        assert!(calls["write_bytes"].as_u64().unwrap() >= 30 * batch * 100);
        assert_eq!(calls["sync_data_ns"]["count"], calls["syncs"]);
        let engine = res["engine"].as_str().unwrap();
        let stats = &res["writebehind"];
        match c["backend"].as_str().unwrap() {
            "writebehind" => assert_eq!(engine, "io_uring"),
            "writebehind-threads" => assert_eq!(engine, "threads"),
            "pwrite" => assert_eq!(engine, "pwrite"),
            other => panic!("redb ran on {other}"),
        }
        if engine == "pwrite" {
            assert!(stats.is_null());
        } else {
            // The handle synced at least once per commit.
            assert!(stats["fsyncs"].as_u64().unwrap() >= 30, "{stats}");
        }
    }
    seen.sort();
    let want: Vec<(u64, String)> = [1, 100]
        .into_iter()
        .flat_map(|b| ["pwrite", "writebehind", "writebehind-threads"].map(|n| (b, n.to_string())))
        .collect();
    assert_eq!(seen, want);
    for label in ["redb/1 ", "redb/100 ", "commits/s", "syncs/commit"] {
        assert!(
            stderr.contains(label),
            "no {label:?} in the table:\n{stderr}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch file left behind"
    );
}
