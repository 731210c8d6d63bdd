//! A power-cut file system for tests: a FUSE mount over a backing directory that keeps
//! every unsynced write in memory, like a disk's volatile write cache, and can lose it.
//!
//! - Reads and lookups pass through to the backing directory; writes go to an in-memory
//!   cache, per file and per 4 KiB page. Size changes (`truncate`, `fallocate`, hole
//!   punching) are volatile too.
//! - `fsync` and `fdatasync` on a file write that file's dirty pages and its size to the
//!   backing file, then sync the backing file. `flush` and `release` (close) persist
//!   nothing.
//! - A file created through the mount exists in the backing directory at once, but its
//!   name is volatile: a power cut removes it unless the directory was synced since
//!   (`fsyncdir`, that is `fsync` on an open directory), as POSIX asks of callers.
//!   `unlink` is immediate and durable (the tests use it only to clean up).
//! - [`PowerCut::cut`] freezes the file system (every later operation fails with `EIO`)
//!   and writes to the backing directory only the unsynced changes that the chosen
//!   [`Model`] lets survive. The backing directory then holds what a machine would find
//!   after rebooting.
//! - [`Delays`] (seeded) slow writes and syncs down, so that a sync overtakes writes
//!   still in flight: a sync covers only the writes that completed before it.
//!
//! `O_DIRECT` opens are served like any other: every open is answered with
//! `FOPEN_DIRECT_IO`, so the kernel keeps no page cache of these files and every write,
//! buffered or direct, reaches the same volatile cache.
//!
//! Not modelled: torn writes inside a page (a page survives whole or not at all), a
//! device that acknowledges a flush it did not do, subdirectories, renames and links.
//!
//! Mounting needs root (then fuser calls mount(2) itself) or `fusermount3`.

mod cache;
mod fs;
// The tests' one seeded generator (splitmix64), so every power cut can be repeated.
#[path = "../../tests/common/rng.rs"]
mod rng;

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use cache::PAGE;

/// Which unsynced changes survive a power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// None: every file is as it was at its last sync.
    NoneSurvive,
    /// A random subset of each file's dirty pages, each page whole (writeback reorders);
    /// a file's size change survives or not on its own.
    PageSubset,
    /// A random prefix of each file's changes, in the order they arrived.
    WritePrefix,
}

impl Model {
    /// Every model, for tests that cycle through them.
    pub const ALL: [Model; 3] = [Model::NoneSurvive, Model::PageSubset, Model::WritePrefix];
}

/// Seeded random delays: each request of that kind sleeps for a time in `(min, max)`
/// before it takes effect. `None`: no delay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delays {
    /// For every `write`.
    pub write: Option<(Duration, Duration)>,
    /// For every `fsync`/`fdatasync`.
    pub sync: Option<(Duration, Duration)>,
}

/// Operation counts since the mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `write` requests applied.
    pub writes: u64,
    /// `fsync` requests on files (all of the file's metadata).
    pub fsyncs: u64,
    /// `fdatasync` requests on files.
    pub fdatasyncs: u64,
    /// `fsync` requests on the directory.
    pub dir_syncs: u64,
}

/// What a power cut did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced pieces (pages, or changes for the prefix model) over all files.
    pub unsynced: u64,
    /// Of those, how many reached the backing files.
    pub survived: u64,
    /// Files created since the last directory sync, removed by the cut.
    pub names_lost: u64,
}

impl fmt::Display for CutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} unsynced pieces survived, {} new names lost",
            self.survived, self.unsynced, self.names_lost
        )
    }
}

/// A mounted power-cut file system. Dropping it unmounts (lazily) and waits for the
/// FUSE threads to end.
pub struct PowerCut {
    shared: Arc<fs::Shared>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
    /// The FUSE connection's number (the mount's minor device number), for aborting it.
    connection: u32,
}

/// How long an unmount waits for the FUSE threads before it aborts the connection.
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);

impl PowerCut {
    /// Mounts a power-cut view of `backing` (a directory of regular files) at
    /// `mountpoint` (an empty directory). `seed` seeds the delays.
    pub fn mount(
        backing: &Path,
        mountpoint: &Path,
        delays: Delays,
        seed: u64,
    ) -> io::Result<PowerCut> {
        let shared = Arc::new(fs::Shared::new(backing.canonicalize()?, delays, seed));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("powercut".into()),
            fuser::MountOption::Subtype("powercut".into()),
        ];
        // Several threads, so that a delayed write does not hold back a sync.
        config.n_threads = Some(4);
        let session =
            fuser::Session::new(fs::PowerCutFs(shared.clone()), mountpoint, &config)?.spawn()?;
        let dev = std::fs::metadata(mountpoint)?.dev();
        Ok(PowerCut {
            shared,
            mountpoint: mountpoint.to_path_buf(),
            session: Some(session),
            connection: libc::minor(dev),
        })
    }

    /// Where the file system is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power: freezes the file system and keeps of the unsynced state only what
    /// `model` (with choices seeded by `seed`) lets survive. Fails if already cut.
    pub fn cut(&self, model: Model, seed: u64) -> io::Result<CutReport> {
        self.shared.cut(model, seed)
    }

    /// Operation counts so far.
    pub fn counts(&self) -> Counts {
        self.shared.counts()
    }

    /// `fsync` + `fdatasync` requests on the file `name` so far.
    pub fn file_syncs(&self, name: impl AsRef<OsStr>) -> u64 {
        self.shared.file_syncs(name.as_ref())
    }

    /// Unmounts and waits for the FUSE threads to end. If they have not ended after 10 s
    /// (a process still holds a file open), aborts the connection and fails with
    /// `TimedOut`, rather than hang (mounting the fusectl file system at
    /// /sys/fs/fuse/connections if it is not mounted yet).
    pub fn unmount(self) -> io::Result<()> {
        self.unmount_within(UNMOUNT_TIMEOUT)
    }

    /// [`unmount`](Self::unmount), waiting at most `timeout` before the abort.
    pub fn unmount_within(mut self, timeout: Duration) -> io::Result<()> {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // Lazy: a process killed a moment ago may not have closed its files yet. The
        // connection ends (and the FUSE threads with it) once the last file is closed.
        nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH)?;
        let deadline = Instant::now() + timeout;
        while !session.guard.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let timed_out = !session.guard.is_finished();
        if timed_out {
            // If even that fails, the threads are left behind (not joined) rather than hang.
            abort_connection(self.connection)?;
        }
        session.join()?;
        if timed_out {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "powercut: {} still in use {timeout:?} after unmounting; aborted",
                    self.mountpoint.display()
                ),
            ));
        }
        Ok(())
    }
}

/// Aborts FUSE connection `n` through the fusectl file system, mounting it if needed.
fn abort_connection(n: u32) -> io::Result<()> {
    let dir = Path::new("/sys/fs/fuse/connections");
    let abort = dir.join(n.to_string()).join("abort");
    if !abort.exists() {
        let none: Option<&str> = None;
        nix::mount::mount(
            Some("fusectl"),
            dir,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            none,
        )?;
    }
    std::fs::write(&abort, b"1")
}

impl Drop for PowerCut {
    fn drop(&mut self) {
        let _ = self.stop(UNMOUNT_TIMEOUT);
    }
}
