//! The temporary file each run writes: a unique name in `--dir`, created exclusively and
//! removed when the guard is dropped (also on an error or a panic), and the pre-sizing of
//! `pages`/`mixed` files.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use writebehind::AlignedBuf;

/// A file in `--dir` that this process created and that is removed on drop.
#[derive(Debug)]
pub struct ScratchFile {
    path: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl ScratchFile {
    /// Creates a fresh, empty file in `dir` (mode 0600). The name is predictable, so it
    /// is created exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`): whatever already sits under
    /// that name (a file, or a symlink planted to make a root run overwrite its target)
    /// makes this fail with `AlreadyExists` and is left untouched.
    pub fn create(dir: &Path) -> io::Result<ScratchFile> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        Self::create_at(dir.join(format!(".writebehind-bench-{}-{n}.dat", std::process::id())))
    }

    /// Creates `path` exclusively, as [`create`](ScratchFile::create) describes.
    fn create_at(path: PathBuf) -> io::Result<ScratchFile> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
        Ok(ScratchFile { path })
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// `len` bytes filled with `fill`, starting at an address that is a multiple of `align`.
pub fn filled(len: usize, align: usize, fill: u8) -> io::Result<AlignedBuf> {
    let mut b = AlignedBuf::try_zeroed(len, align)?;
    b.as_mut_slice().fill(fill);
    Ok(b)
}

/// Writes `len` bytes of a pattern to the scratch file at `path` in 1 MiB chunks and
/// makes them durable, so that every backend starts from the same allocated, clean file.
/// Uses O_DIRECT when `align` is given and divides the chunk sizes (no dirty page cache
/// is left to be written back during the next measurement); otherwise buffered + fsync.
pub fn presize(path: &Path, len: u64, align: Option<u64>) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let direct_ok = align.filter(|a| CHUNK.is_multiple_of(*a) && len.is_multiple_of(*a));
    let mut opts = OpenOptions::new();
    opts.write(true).custom_flags(libc::O_NOFOLLOW);
    if direct_ok.is_some() {
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_DIRECT);
    }
    let file = opts.open(path)?;
    let mut block = filled(CHUNK as usize, direct_ok.unwrap_or(4096) as usize, 0x5A)?;
    let mut off = 0;
    while off < len {
        let n = (len - off).min(CHUNK) as usize;
        block.as_mut_slice()[..8].copy_from_slice(&off.to_le_bytes());
        file.write_all_at(&block.as_slice()[..n], off)?;
        off += n as u64;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_files_are_unique_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = ScratchFile::create(dir.path()).unwrap();
        let b = ScratchFile::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(fs::metadata(a.path()).unwrap().len(), 0);
        let p = a.path().to_path_buf();
        drop(a);
        assert!(!p.exists());
        drop(b);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A symlink planted under the next scratch name (as another user could in /tmp) is
    /// refused, and the file it points at keeps its bytes.
    #[test]
    fn a_planted_symlink_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let next = SEQ.load(Ordering::Relaxed);
        // Plant links under the next few names: tests running in parallel share SEQ.
        let names: Vec<PathBuf> = (next..next + 64)
            .map(|n| {
                let link = dir
                    .path()
                    .join(format!(".writebehind-bench-{}-{n}.dat", std::process::id()));
                std::os::unix::fs::symlink(&victim, &link).unwrap();
                link
            })
            .collect();
        let e = ScratchFile::create(dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // A dangling link is refused too (O_EXCL does not follow it to create the target).
        let gone = dir.path().join("gone");
        let link = dir.path().join("dangling");
        std::os::unix::fs::symlink(&gone, &link).unwrap();
        let e = ScratchFile::create_at(link.clone()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert!(!gone.exists(), "the link's target was created");
        assert!(
            fs::symlink_metadata(&link).unwrap().is_symlink(),
            "the link was removed"
        );
        drop(names);
    }

    #[test]
    fn filled_blocks_are_aligned() {
        for align in [1, 512, 4096] {
            let mut b = filled(8192, align, 7).unwrap();
            assert_eq!(b.as_slice().as_ptr() as usize % align, 0);
            assert_eq!(b.as_slice().len(), 8192);
            b.as_mut_slice()[0] = 1;
            assert_eq!(b.as_slice()[..2], [1, 7]);
        }
    }

    #[test]
    fn presize_writes_the_whole_length_direct_or_not() {
        let dir = tempfile::tempdir().unwrap();
        for (len, align) in [
            (3 << 20, Some(512)),
            ((1 << 20) + 100, Some(512)),
            (5000, None),
        ] {
            let f = ScratchFile::create(dir.path()).unwrap();
            presize(f.path(), len, align).unwrap();
            assert_eq!(fs::metadata(f.path()).unwrap().len(), len);
        }
    }
}
