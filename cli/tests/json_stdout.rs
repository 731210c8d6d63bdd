//! `writebehind bench --json -`: the JSON alone on standard output (it parses), the table
//! on standard error.

use std::process::Command;

#[test]
fn json_dash_writes_the_json_to_stdout_and_the_table_to_stderr() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_writebehind"))
        .args([
            "bench",
            "--backend",
            "pwrite",
            "--workload",
            "log",
            "--ops",
            "50",
            "--threads",
            "1",
            "--json",
            "-",
            "--dir",
        ])
        .arg(dir.path())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let runs = v.as_array().expect("an array of runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["result"]["ops"], 50);
    assert!(
        stderr.contains("workload  backend"),
        "no table on stderr:\n{stderr}"
    );
    assert!(!dir.path().join("-").exists(), "wrote a file named '-'");
}
