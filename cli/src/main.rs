//! The `writebehind` command-line tool. `writebehind bench` compares the write-behind
//! handle with the blocking writers on this machine; see docs/benchmarks.md.

mod bench;

use std::process::ExitCode;

fn main() -> ExitCode {
    bench::main(std::env::args_os().collect())
}
