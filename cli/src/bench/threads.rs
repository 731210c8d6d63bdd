//! `threads_peak`: the most threads the process had during a run, sampled from
//! /proc/self/task by a small thread that stops with the run.

use std::fs;
use std::io;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often the sampler looks: every [`FIRST_PERIOD`] for its first [`FIRST_SAMPLES`]
/// samples, so a run of a few ms still gets some while its threads are alive, then every
/// [`PERIOD`]. Its CPU time counts in every backend's CPU column: every 5 ms it took 1.3%
/// of a CPU during `log --threads 8` (0.3 µs per commit), every 20 ms a third of that.
const PERIOD: Duration = Duration::from_millis(20);
const FIRST_PERIOD: Duration = Duration::from_millis(5);
const FIRST_SAMPLES: u32 = 20;
/// The sampler's own thread name, left out of the count.
const SAMPLER_NAME: &str = "bench-threads";

/// All threads of this process now, io_uring's workers and the sampler included: one
/// read of /proc/self/stat (`num_threads`, the 20th field), against one read per thread
/// for [`count`].
fn count_all() -> Option<usize> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // The 2nd field (the name, in parentheses) may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(17)?.parse().ok()
}

/// The threads of this process now, except io_uring's workers (`iou-wrk-*`, `iou-sqp-*`,
/// which the kernel starts on its own) and the sampler itself.
pub fn count() -> io::Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        // A thread may exit between the listing and the read: then it is not counted.
        let Ok(comm) = fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let comm = comm.trim_end();
        if !comm.starts_with("iou-") && comm != SAMPLER_NAME {
            n += 1;
        }
    }
    Ok(n)
}

/// A thread sampling [`count`] until [`Sampler::stop`].
pub struct Sampler {
    stop: Sender<()>,
    thread: JoinHandle<usize>,
}

impl Sampler {
    /// Starts sampling.
    pub fn start() -> io::Result<Sampler> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name(SAMPLER_NAME.into())
            .spawn(move || {
                let mut peak = 0;
                // `count` reads a file per thread (at 8 log committers it cost about 1 µs
                // of CPU per commit, in the CPU column of every backend): list again only
                // when the whole count moved since the last listing.
                let mut listed_at = None;
                let mut samples = 0u32;
                loop {
                    let all = count_all();
                    if all.is_none() || all != listed_at {
                        listed_at = all;
                        peak = peak.max(count().unwrap_or(0));
                    }
                    samples = samples.saturating_add(1);
                    let wait = if samples <= FIRST_SAMPLES {
                        FIRST_PERIOD
                    } else {
                        PERIOD
                    };
                    match stopped.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                peak.max(count().unwrap_or(0))
            })?;
        Ok(Sampler { stop, thread })
    }

    /// Stops sampling and returns the peak.
    pub fn stop(self) -> usize {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn the_whole_count_sees_threads_alive_now() {
        let started = Barrier::new(5);
        let done = Barrier::new(5);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    started.wait();
                    done.wait();
                });
            }
            started.wait();
            let all = count_all().expect("num_threads in /proc/self/stat");
            done.wait();
            // Other tests run threads in parallel, so only a lower bound holds.
            assert!(all >= 5, "{all}: this thread and its 4 are alive");
        });
    }

    #[test]
    fn the_peak_sees_threads_that_came_and_went() {
        let before = count().unwrap();
        assert!(before >= 1, "at least this thread");
        let sampler = Sampler::start().unwrap();
        let started = Barrier::new(5);
        let done = Barrier::new(5);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    started.wait();
                    done.wait();
                });
            }
            started.wait();
            thread::sleep(FIRST_PERIOD * 4);
            done.wait();
        });
        let peak = sampler.stop();
        // Other tests run threads in parallel, so only a lower bound holds.
        assert!(
            peak >= 5,
            "peak {peak}: this thread and its 4 were alive together"
        );
    }
}
