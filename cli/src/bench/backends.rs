//! Opening and closing the handle a backend name stands for.

use std::io;
use std::path::Path;

use writebehind::{Backend, Config, FileHandle, Handle, Stats, WriteBehindFile};

use super::cli::{BackendName, CellConfig};

/// An open handle of one of the backends.
pub enum Opened {
    WriteBehind(WriteBehindFile),
    File(FileHandle),
    /// Any handle, for tests of the runner that must not touch the real backends.
    #[cfg(test)]
    Test(Box<dyn Handle>),
}

/// What closing a handle reports.
pub struct Closed {
    /// The write-behind handle's statistics (`None` for the blocking handles).
    pub stats: Option<Stats>,
}

/// The `Config` a backend opens its file with.
pub fn config(cell: &CellConfig) -> Config {
    let mut cfg = Config::default().direct_io(cell.direct);
    match cell.backend {
        BackendName::WriteBehind => cfg = cfg.backend(Backend::IoUring),
        BackendName::WriteBehindThreads => cfg = cfg.backend(Backend::Threads),
        BackendName::Pwrite | BackendName::PwriteDirect => {}
    }
    if let Some(b) = cell.buffer_bytes {
        cfg = cfg.buffer_bytes(usize::try_from(b).unwrap_or(usize::MAX));
    }
    if let Some(w) = cell.preallocate {
        cfg = cfg.preallocate(usize::try_from(w).unwrap_or(usize::MAX));
    }
    cfg
}

impl Opened {
    /// Opens the scratch file at `path` for `cell`. The file already exists (created
    /// exclusively by `ScratchFile::create`, then pre-sized or left empty), so it is only
    /// opened, never created or truncated here.
    pub fn open(cell: &CellConfig, path: &Path) -> io::Result<Opened> {
        let cfg = config(cell);
        Ok(if cell.backend.is_writebehind() {
            Opened::WriteBehind(WriteBehindFile::open(path, &cfg)?)
        } else {
            Opened::File(FileHandle::open(path, &cfg)?)
        })
    }

    /// The handle, for the workload threads.
    pub fn handle(&self) -> &dyn Handle {
        match self {
            Opened::WriteBehind(h) => h,
            Opened::File(h) => h,
            #[cfg(test)]
            Opened::Test(h) => h.as_ref(),
        }
    }

    /// The engine actually in use: `io_uring`, `threads` or `pwrite`.
    pub fn engine(&self) -> &'static str {
        match self {
            Opened::WriteBehind(h) => h.backend().name(),
            Opened::File(_) => "pwrite",
            #[cfg(test)]
            Opened::Test(_) => "test",
        }
    }

    /// The alignment the handle requires of writes (1 without O_DIRECT).
    pub fn alignment(&self) -> Option<u64> {
        match self {
            Opened::WriteBehind(h) => Some(h.alignment() as u64),
            Opened::File(h) => Some(h.alignment() as u64),
            #[cfg(test)]
            Opened::Test(_) => None,
        }
    }

    /// Closes the handle: for writebehind, writes back everything still buffered and
    /// stops its submission thread.
    pub fn close(self) -> io::Result<Closed> {
        match self {
            Opened::WriteBehind(h) => Ok(Closed {
                stats: Some(h.close()?),
            }),
            Opened::File(h) => {
                h.close()?;
                Ok(Closed { stats: None })
            }
            #[cfg(test)]
            Opened::Test(_) => Ok(Closed { stats: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::cli::{Stop, Workload};
    use std::time::Duration;

    fn cell(backend: BackendName, direct: bool, buffer: Option<u64>) -> CellConfig {
        CellConfig {
            workload: Workload::Pages,
            backend,
            batch: 0,
            threads: 1,
            readers: 0,
            write_size: 4096,
            file_size: 1 << 20,
            stop: Stop::Duration(Duration::from_secs(1)),
            direct,
            force_every: 0,
            buffer_bytes: buffer,
            preallocate: None,
            files: 1,
        }
    }

    #[test]
    fn configs_match_the_backend_names() {
        let c = config(&cell(BackendName::WriteBehind, true, Some(1 << 20)));
        assert_eq!(c.backend_choice(), Backend::IoUring);
        assert!(c.is_direct_io());
        assert_eq!(
            c,
            Config::default()
                .direct_io(true)
                .backend(Backend::IoUring)
                .buffer_bytes(1 << 20)
        );
        let c = config(&cell(BackendName::WriteBehindThreads, false, None));
        assert_eq!(c.backend_choice(), Backend::Threads);
        assert!(!c.is_direct_io());
        let c = config(&cell(BackendName::PwriteDirect, true, None));
        assert!(c.is_direct_io());
        assert!(c.validate().is_ok());
    }
}
