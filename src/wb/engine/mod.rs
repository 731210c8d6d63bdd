//! [`Engine`]: one submission thread and one I/O engine (an io_uring ring, or a fixed
//! pool of worker threads) shared by many [`WriteBehindFile`]s.
//!
//! The engine's thread runs `pass::run` over a roster of files. A file joins the
//! roster when opened and leaves it once closed and written back (nothing of it in
//! flight), which is when its `close` returns. The thread ends when every [`Engine`]
//! clone has been dropped and no file is left.

pub(crate) mod backend;
mod pass;

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use super::pool::Budget;
use super::{Inner, WriteBehindFile};
use crate::config::{Config, EngineConfig, FileConfig};
use crate::error::os_msg;
use crate::fileio::{self, OpenMode};
use crate::stats::BackendKind;
use backend::{open::open_engine, Waker};

/// One submission thread and one io_uring ring (or, on the thread backend, one fixed
/// pool of workers) writing back many files: open each through it with
/// [`create`](Engine::create), [`open`](Engine::open) or [`from_file`](Engine::from_file).
///
/// Every file is a [`WriteBehindFile`] with the same contract as one opened on its own;
/// one submission pass serves all of them, so forces on several files share
/// `io_uring_enter` calls, and a thousand open files cost one thread and one ring. The
/// files share one memory budget ([`EngineConfig::buffer_bytes`]), in which each file with
/// writers keeps a minimum share; each keeps its own error latch and its own group
/// commits.
///
/// `Engine` is cheap to clone (an `Arc`) and `Send + Sync`. Its thread ends once every
/// clone is dropped and every file is closed. [`WriteBehindFile::create`] and
/// [`WriteBehindFile::open`] start a private engine for the one file.
///
/// ```
/// use writebehind::{Engine, EngineConfig, FileConfig, Handle};
/// # fn main() -> std::io::Result<()> {
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::new(&EngineConfig::default())?;
/// let files: Vec<_> = (0..4)
///     .map(|i| engine.create(dir.path().join(format!("t{i}")), &FileConfig::default()))
///     .collect::<Result<_, _>>()?;
/// for (i, f) in files.iter().enumerate() {
///     f.write(0, &[i as u8; 4096])?;
/// }
/// for f in &files {
///     f.force()?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Engine {
    hub: Arc<Hub>,
    /// Dropped with the last clone: tells the thread it may end once its files are gone.
    _alive: Arc<Alive>,
}

/// What the engine's thread and its files share.
pub(crate) struct Hub {
    pub(crate) waker: Arc<dyn Waker>,
    pub(crate) kind: BackendKind,
    pub(crate) cfg: EngineConfig,
    pub(crate) io_worker_cap: u32,
    /// The memory budget all files share ([`EngineConfig::buffer_bytes`]).
    pub(crate) budget: Arc<Budget>,
    /// `io_uring_enter` calls so far, and those that submitted (published by the thread
    /// after each wait).
    pub(crate) enters: AtomicU64,
    pub(crate) submits: AtomicU64,
    lobby: Mutex<Lobby>,
}

/// Files waiting to join the thread's roster, and whether the thread may end.
#[derive(Default)]
pub(crate) struct Lobby {
    pub(crate) arriving: Vec<Arrival>,
    /// Every `Engine` clone is gone: no file can arrive any more.
    pub(crate) engine_gone: bool,
    /// The thread has stopped (with this errno): opening fails with it.
    pub(crate) stopped: Option<i32>,
}

/// A file joining the roster; `done` is dropped when it leaves (its `close` waits on it).
pub(crate) struct Arrival {
    pub(crate) inner: Arc<Inner>,
    pub(crate) done: mpsc::Sender<()>,
}

/// How a file wakes its engine's thread: it marks itself first, so that a pass visits
/// the files that asked (plus those with completions or a timer due), not all of them.
pub(crate) struct FileWaker {
    poked: AtomicBool,
    engine: Arc<dyn Waker>,
}

impl FileWaker {
    fn new(engine: Arc<dyn Waker>) -> Self {
        FileWaker {
            poked: AtomicBool::new(true),
            engine,
        }
    }

    /// Marks the file for the next pass and wakes the thread.
    pub(crate) fn wake(&self) {
        self.poked.store(true, Ordering::Release);
        self.engine.wake();
    }

    /// Marks the file for the next pass, from the engine's own thread.
    pub(crate) fn mark(&self) {
        self.poked.store(true, Ordering::Release);
    }

    /// Whether the file was marked since the last call (which clears the mark). Taken
    /// before the file's state is locked, so a later mark is never lost.
    pub(crate) fn take(&self) -> bool {
        self.poked.swap(false, Ordering::AcqRel)
    }
}

/// See [`Engine::hold_passes`].
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub struct PassHold<'a>(#[allow(dead_code)] MutexGuard<'a, Lobby>);

struct Alive(Arc<Hub>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.lobby().engine_gone = true;
        self.0.waker.wake();
    }
}

impl Hub {
    /// A waker for a new file of this engine.
    pub(crate) fn file_waker(&self) -> FileWaker {
        FileWaker::new(Arc::clone(&self.waker))
    }

    pub(crate) fn lobby(&self) -> MutexGuard<'_, Lobby> {
        self.lobby.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Engine {
    /// Starts an engine: its submission thread and its ring (or worker pool).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a bad `cfg`; with [`Backend::IoUring`](crate::Backend), the
    /// error of setting up the ring; the error of spawning the thread.
    pub fn new(cfg: &EngineConfig) -> io::Result<Engine> {
        cfg.validate()?;
        Self::spawn(cfg).map(|(engine, _thread)| engine)
    }

    /// Starts the thread; returns the engine and the thread's handle (joined by the
    /// single-file constructors, whose `close` ends the thread).
    pub(crate) fn spawn(cfg: &EngineConfig) -> io::Result<(Engine, JoinHandle<()>)> {
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (hub_tx, hub_rx) = mpsc::sync_channel::<Arc<Hub>>(1);
        let io_cfg = cfg.clone();
        let thread = thread::Builder::new()
            .name("writebehind-submit".into())
            .spawn(move || {
                // The I/O engine is built here: an io_uring ring with SINGLE_ISSUER must
                // be used by the thread that created it.
                let io = match open_engine(&io_cfg) {
                    Ok(io) => io,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((io.waker(), io.kind(), io.io_worker_cap())));
                if let Ok(hub) = hub_rx.recv() {
                    pass::run(hub, io);
                }
            })?;
        let (waker, kind, io_worker_cap) = match ready_rx.recv() {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(os_msg(
                    libc::EIO,
                    "writebehind: submission thread died at start",
                ));
            }
        };
        let hub = Arc::new(Hub {
            waker,
            kind,
            cfg: cfg.clone(),
            io_worker_cap,
            budget: Budget::new(cfg.buffer_bytes),
            enters: AtomicU64::new(0),
            submits: AtomicU64::new(0),
            lobby: Mutex::new(Lobby::default()),
        });
        hub_tx
            .send(Arc::clone(&hub))
            .map_err(|_| os_msg(libc::EIO, "writebehind: submission thread died at start"))?;
        let alive = Arc::new(Alive(Arc::clone(&hub)));
        Ok((Engine { hub, _alive: alive }, thread))
    }

    /// Opens an existing file on this engine; see [`WriteBehindFile::open`].
    pub fn open(&self, path: impl AsRef<Path>, cfg: &FileConfig) -> io::Result<WriteBehindFile> {
        self.open_with(path, cfg, OpenMode::Existing)
    }

    /// Creates (or truncates) a file on this engine; see [`WriteBehindFile::create`].
    pub fn create(&self, path: impl AsRef<Path>, cfg: &FileConfig) -> io::Result<WriteBehindFile> {
        self.open_with(path, cfg, OpenMode::CreateOrTruncate)
    }

    /// Opens `path` as `mode` says on this engine; see [`WriteBehindFile::open_with`].
    pub fn open_with(
        &self,
        path: impl AsRef<Path>,
        cfg: &FileConfig,
        mode: OpenMode,
    ) -> io::Result<WriteBehindFile> {
        let full = Config::assemble(&self.hub.cfg, cfg);
        full.validate()?;
        let opened = fileio::open(path.as_ref(), &full, mode)?;
        let mut f = self.attach(opened.file, &full)?;
        f._lock = opened.lock;
        Ok(f)
    }

    /// Runs an already open file on this engine. It must be open for reading and
    /// writing, with `O_DIRECT` if and only if `cfg` asks for direct I/O; it is not
    /// locked ([`FileConfig::lock_file`] applies to the opening calls only).
    pub fn from_file(&self, file: File, cfg: &FileConfig) -> io::Result<WriteBehindFile> {
        let full = Config::assemble(&self.hub.cfg, cfg);
        full.validate()?;
        self.attach(file, &full)
    }

    /// The engine in use (io_uring, or threads where io_uring is unavailable).
    pub fn backend(&self) -> BackendKind {
        self.hub.kind
    }

    /// `io_uring_enter` calls so far, for all files together (0 on the thread backend).
    pub fn enters(&self) -> u64 {
        self.hub.enters.load(Ordering::Relaxed)
    }

    /// Those of [`enters`](Self::enters) that submitted requests.
    pub fn submitting_enters(&self) -> u64 {
        self.hub.submits.load(Ordering::Relaxed)
    }

    /// The io-wq worker cap in force, 0 when none (see [`EngineConfig::io_workers`]).
    pub fn io_worker_cap(&self) -> u32 {
        self.hub.io_worker_cap
    }

    /// Test hook (feature `fault-injection`): the engine's thread starts no pass while
    /// the returned guard lives, so that what callers ask meanwhile meets in one pass.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn hold_passes(&self) -> PassHold<'_> {
        PassHold(self.hub.lobby())
    }

    /// Builds the file's handle and hands it to the thread. (A file with a fault
    /// injector shares the engine too: the thread registers its injector with the I/O
    /// engine's fault wrapper when the file joins the roster.)
    pub(crate) fn attach(&self, file: File, cfg: &Config) -> io::Result<WriteBehindFile> {
        let inner = Arc::new(Inner::new(file, cfg, &self.hub)?);
        let (done_tx, done_rx) = mpsc::channel();
        {
            let mut lobby = self.hub.lobby();
            if let Some(code) = lobby.stopped {
                return Err(os_msg(code, "writebehind: the engine has stopped"));
            }
            lobby.arriving.push(Arrival {
                inner: Arc::clone(&inner),
                done: done_tx,
            });
        }
        self.hub.waker.wake();
        Ok(WriteBehindFile::new(inner, Arc::clone(&self.hub), done_rx))
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.hub.kind)
            .field("io_worker_cap", &self.hub.io_worker_cap)
            .finish_non_exhaustive()
    }
}
