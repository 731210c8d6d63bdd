//! Child processes for the crash and power-loss tests: the test binary re-executes one of
//! its own `#[ignore]`d tests, which writes through a handle and announces what it does
//! on its stdout (a pipe), one line per event, each line starting with a tag.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A running child test.
pub struct Child {
    process: std::process::Child,
    ready: mpsc::Receiver<()>,
    lines: JoinHandle<Vec<String>>,
    errors: JoinHandle<String>,
}

/// How a child ended.
pub struct Ended {
    pub status: ExitStatus,
    /// Its protocol lines: what followed `tag` on each stdout line that had it.
    pub lines: Vec<String>,
    pub stderr: String,
}

/// A command that runs only the ignored test `name` of this test binary.
pub fn command(name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary's path"));
    cmd.args([
        "--ignored",
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

/// Starts the ignored test `name` of this binary with `env` added. Its stdout lines that
/// contain `tag` are collected (the text after the tag); the first one that starts with
/// `S` marks it ready.
pub fn spawn(name: &str, env: &[(&str, String)], tag: &'static str) -> Child {
    let mut process = command(name)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let (tx, ready) = mpsc::channel();
    let stdout = process.stdout.take().unwrap();
    let lines = thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find(tag) {
                let msg = line[at + tag.len()..].to_string();
                if msg.starts_with('S') {
                    let _ = tx.send(());
                }
                lines.push(msg);
            }
        }
        lines
    });
    let stderr = process.stderr.take().unwrap();
    let errors = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    Child {
        process,
        ready,
        lines,
        errors,
    }
}

impl Child {
    /// Waits up to `timeout` for the ready line; false if it did not come.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        self.ready.recv_timeout(timeout).is_ok()
    }

    /// Kills it with `SIGKILL` (if still running).
    pub fn kill(&mut self) {
        let _ = self.process.kill();
    }

    /// Waits for it to end and collects what it said.
    pub fn wait(mut self) -> Ended {
        let status = self.process.wait().unwrap();
        Ended {
            status,
            lines: self.lines.join().unwrap(),
            stderr: self.errors.join().unwrap(),
        }
    }
}

/// A step a child announced: a write (`W offset length seed`: `pattern(seed, length)` at
/// `offset`), or, with `seed == None`, a `set_len(off)` (`len` 0).
#[derive(Clone, Debug)]
pub struct Intent {
    pub off: u64,
    pub len: usize,
    pub seed: Option<u64>,
}

impl Intent {
    /// Parses the fields after the `W`.
    pub fn parse<'a>(mut fields: impl Iterator<Item = &'a str>) -> Intent {
        let mut num = || fields.next().unwrap().parse::<u64>().unwrap();
        let (off, len, seed) = (num(), num() as usize, Some(num()));
        Intent { off, len, seed }
    }

    /// A `set_len(len)`.
    pub fn set_len(len: u64) -> Intent {
        Intent {
            off: len,
            len: 0,
            seed: None,
        }
    }

    /// Whether the write covers byte `at`.
    pub fn covers(&self, at: u64) -> bool {
        (self.off..self.off + self.len as u64).contains(&at)
    }

    /// Sets `ok[i]` for every byte `got[i]` that holds this write's value.
    pub fn allow(&self, got: &[u8], ok: &mut [bool]) {
        let Some(seed) = self.seed else { return };
        let data = super::pattern(seed, self.len);
        let from = (self.off as usize).min(got.len());
        let to = (self.off as usize + self.len).min(got.len());
        for i in from..to {
            ok[i] |= got[i] == data[i - self.off as usize];
        }
    }

    /// The file lengths this step may leave, given the lengths `[lo, hi]` before it: a
    /// write may have landed only in part (write-back splits and merges writes).
    pub fn lengths_after(&self, (lo, hi): (u64, u64)) -> (u64, u64) {
        match self.seed {
            None => (self.off, self.off),
            Some(_) => (lo.max(self.off), hi.max(self.off + self.len as u64)),
        }
    }

    /// Applies the step to `model`.
    pub fn apply(&self, model: &mut Vec<u8>) {
        let Some(seed) = self.seed else {
            model.resize(self.off as usize, 0);
            return;
        };
        let end = self.off as usize + self.len;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[self.off as usize..end].copy_from_slice(&super::pattern(seed, self.len));
    }
}
