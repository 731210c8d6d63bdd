//! The temporary file each run writes: a unique name in `--dir`, removed when the guard
//! is dropped (also on an error or a panic), and the pre-sizing of `pages`/`mixed` files.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A path in `--dir` that is removed on drop.
#[derive(Debug)]
pub struct ScratchFile {
    path: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl ScratchFile {
    /// A fresh name in `dir` (the file is not created here).
    pub fn new(dir: &Path) -> ScratchFile {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        ScratchFile {
            path: dir.join(format!(".writebehind-bench-{}-{n}.dat", std::process::id())),
        }
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

/// A zeroed-then-patterned buffer of `len` bytes whose start is aligned to `align`, in
/// safe code: a larger `Vec` and an offset into it.
pub struct AlignedBlock {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBlock {
    /// `len` bytes filled with `fill`, starting at an address that is a multiple of `align`.
    pub fn new(len: usize, align: usize, fill: u8) -> AlignedBlock {
        let align = align.max(1);
        let storage = vec![fill; len + align];
        let start = storage.as_ptr().align_offset(align);
        AlignedBlock {
            storage,
            start,
            len,
        }
    }

    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// The aligned bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Writes `len` bytes of a pattern to `path` (created or truncated) in 1 MiB chunks and
/// makes them durable, so that every backend starts from the same allocated, clean file.
/// Uses O_DIRECT when `align` is given and divides the chunk sizes (no dirty page cache
/// is left to be written back during the next measurement); otherwise buffered + fsync.
pub fn presize(path: &Path, len: u64, align: Option<u64>) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let direct_ok = align.filter(|a| CHUNK.is_multiple_of(*a) && len.is_multiple_of(*a));
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if direct_ok.is_some() {
        opts.custom_flags(libc::O_DIRECT);
    }
    let file = opts.open(path)?;
    let mut block = AlignedBlock::new(CHUNK as usize, direct_ok.unwrap_or(4096) as usize, 0x5A);
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
        let a = ScratchFile::new(dir.path());
        let b = ScratchFile::new(dir.path());
        assert_ne!(a.path(), b.path());
        fs::write(a.path(), b"x").unwrap();
        let p = a.path().to_path_buf();
        drop(a);
        assert!(!p.exists());
        drop(b); // never created: dropping is still fine
    }

    #[test]
    fn aligned_blocks_are_aligned() {
        for align in [1, 512, 4096] {
            let mut b = AlignedBlock::new(8192, align, 7);
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
            let f = ScratchFile::new(dir.path());
            presize(f.path(), len, align).unwrap();
            assert_eq!(fs::metadata(f.path()).unwrap().len(), len);
        }
    }
}
