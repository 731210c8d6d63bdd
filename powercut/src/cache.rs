//! The volatile state of one file: what was written (and resized) since its last sync,
//! kept in memory over the backing file, which holds only what was synced.
//!
//! Two views of the same unsynced changes are kept: the current content of every dirty
//! page (for reads and for the page-subset power-cut model) and the changes in the order
//! they arrived (for the prefix model). A sync writes the pages and the size to the
//! backing file and syncs it; a power cut writes only what the chosen model lets survive.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::rng::Rng;
use crate::Model;

/// The cache's page size: a page survives a power cut whole or not at all.
pub const PAGE: u64 = 4096;

/// One unsynced change, in arrival order.
enum Change {
    Write { off: u64, data: Vec<u8> },
    SetLen(u64),
}

/// What a power cut kept of one file's unsynced changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    /// Dirty pages (page-subset model) or changes (prefix model) that survived.
    pub survived: u64,
    /// Dirty pages or changes there were.
    pub unsynced: u64,
}

/// A file's unsynced state over its backing file.
pub struct Volatile {
    backing: File,
    /// The size callers see.
    size: u64,
    /// The backing file's size (the last synced size).
    synced_size: u64,
    /// Bytes at or past this that are in no dirty page read as zeros: the file was cut
    /// down to it since the last sync (the backing file still has the old bytes there).
    zero_from: u64,
    /// Page index -> the page's current content (`PAGE` bytes; past `size` zeros).
    pages: BTreeMap<u64, Box<[u8]>>,
    log: Vec<Change>,
}

impl Volatile {
    pub fn new(backing: File) -> io::Result<Self> {
        let size = backing.metadata()?.len();
        Ok(Volatile {
            backing,
            size,
            synced_size: size,
            zero_from: u64::MAX,
            pages: BTreeMap::new(),
            log: Vec::new(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn backing(&self) -> &File {
        &self.backing
    }

    /// Reads page `p` as it is in the backing file, seen through the cut-down size.
    fn load(&self, p: u64) -> io::Result<Box<[u8]>> {
        let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
        let off = p * PAGE;
        let valid = self.synced_size.min(self.zero_from).saturating_sub(off);
        let want = valid.min(PAGE) as usize;
        let mut done = 0;
        while done < want {
            match self
                .backing
                .read_at(&mut page[done..want], off + done as u64)?
            {
                0 => break,
                n => done += n,
            }
        }
        Ok(page)
    }

    /// Copies up to `len` bytes at `off` (stopping at the size) into a new vector.
    pub fn read(&self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = (off + len as u64).min(self.size);
        let mut out = Vec::with_capacity(end.saturating_sub(off) as usize);
        let mut pos = off;
        while pos < end {
            let p = pos / PAGE;
            let upto = ((p + 1) * PAGE).min(end);
            let from = (pos - p * PAGE) as usize;
            let to = (upto - p * PAGE) as usize;
            match self.pages.get(&p) {
                Some(page) => out.extend_from_slice(&page[from..to]),
                None => out.extend_from_slice(&self.load(p)?[from..to]),
            }
            pos = upto;
        }
        Ok(out)
    }

    /// Applies a write to the dirty pages (not to the backing file).
    pub fn write(&mut self, off: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.put(off, data)?;
        self.size = self.size.max(off + data.len() as u64);
        self.log.push(Change::Write {
            off,
            data: data.to_vec(),
        });
        Ok(())
    }

    fn put(&mut self, off: u64, data: &[u8]) -> io::Result<()> {
        let mut pos = off;
        let end = off + data.len() as u64;
        while pos < end {
            let p = pos / PAGE;
            let upto = ((p + 1) * PAGE).min(end);
            if !self.pages.contains_key(&p) {
                let page = self.load(p)?;
                self.pages.insert(p, page);
            }
            let page = self.pages.get_mut(&p).expect("just loaded");
            page[(pos - p * PAGE) as usize..(upto - p * PAGE) as usize]
                .copy_from_slice(&data[(pos - off) as usize..(upto - off) as usize]);
            pos = upto;
        }
        Ok(())
    }

    /// Changes the size (truncate or extend), volatile like data.
    pub fn set_len(&mut self, size: u64) -> io::Result<()> {
        if size < self.size {
            // Bytes past the new size must read as zeros if the file grows again.
            self.zero_from = self.zero_from.min(size);
            let keep_page = size / PAGE;
            let cut = (size - keep_page * PAGE) as usize;
            self.pages.retain(|&p, _| p <= keep_page);
            if let Some(page) = self.pages.get_mut(&keep_page) {
                page[cut..].fill(0);
            }
        }
        self.size = size;
        self.log.push(Change::SetLen(size));
        Ok(())
    }

    /// Zeroes `[off, off + len)` within the size (hole punching and zero-range).
    pub fn zero_range(&mut self, off: u64, len: u64) -> io::Result<()> {
        let end = (off + len).min(self.size);
        if off < end {
            self.write(off, &vec![0u8; (end - off) as usize])?;
        }
        Ok(())
    }

    /// Makes every change durable: writes the dirty pages and the size to the backing
    /// file and syncs it (`fdatasync` or `fsync`).
    pub fn sync(&mut self, data_only: bool) -> io::Result<()> {
        if self.zero_from < self.synced_size {
            // Cut below the synced size since the last sync: drop the old bytes first.
            self.backing.set_len(self.zero_from)?;
        }
        for (&p, page) in &self.pages {
            let off = p * PAGE;
            if off < self.size {
                let n = (self.size - off).min(PAGE) as usize;
                self.backing.write_all_at(&page[..n], off)?;
            }
        }
        self.backing.set_len(self.size)?;
        if data_only {
            self.backing.sync_data()?;
        } else {
            self.backing.sync_all()?;
        }
        self.synced_size = self.size;
        self.zero_from = u64::MAX;
        self.pages.clear();
        self.log.clear();
        Ok(())
    }

    /// The power cut: writes to the backing file only what `model` lets survive of the
    /// unsynced changes, then drops them all. The backing file is synced.
    pub fn cut(&mut self, model: Model, rng: &mut Rng) -> io::Result<Kept> {
        let mut kept = Kept::default();
        match model {
            Model::NoneSurvive => {
                kept.unsynced = self.log.len() as u64;
            }
            Model::PageSubset => {
                // Writeback reorders: each dirty page reaches the disk whole, or not at all;
                // the size update is one more independent piece of metadata.
                kept.unsynced = self.pages.len() as u64;
                let new_size = rng.chance(50);
                let size = if new_size {
                    self.size
                } else {
                    self.synced_size
                };
                if new_size && self.zero_from < self.synced_size {
                    // The cut-down happened: the old bytes past it are gone.
                    self.backing.set_len(self.zero_from)?;
                }
                for (&p, page) in &self.pages {
                    if rng.chance(50) {
                        kept.survived += 1;
                        self.backing.write_all_at(page, p * PAGE)?;
                    }
                }
                self.backing.set_len(size)?;
            }
            Model::WritePrefix => {
                // The changes reach the disk in the order they were made, up to a point.
                kept.unsynced = self.log.len() as u64;
                kept.survived = rng.below(self.log.len() as u64 + 1);
                for change in &self.log[..kept.survived as usize] {
                    match change {
                        Change::Write { off, data } => self.backing.write_all_at(data, *off)?,
                        Change::SetLen(size) => self.backing.set_len(*size)?,
                    }
                }
            }
        }
        self.backing.sync_all()?;
        self.synced_size = self.backing.metadata()?.len();
        self.size = self.synced_size;
        self.zero_from = u64::MAX;
        self.pages.clear();
        self.log.clear();
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, Volatile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, content).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let v = Volatile::new(file).unwrap();
        (dir, path, v)
    }

    #[test]
    fn writes_stay_in_memory_until_synced() {
        let (_d, path, mut v) = fresh(b"abcdef");
        v.write(2, b"XY").unwrap();
        v.write(10_000, b"Z").unwrap();
        assert_eq!(v.read(0, 6).unwrap(), b"abXYef");
        assert_eq!(v.size(), 10_001);
        assert_eq!(v.read(9_999, 10).unwrap(), b"\0Z");
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdef");
        v.sync(true).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), 10_001);
        assert_eq!(&on_disk[..6], b"abXYef");
        assert_eq!(on_disk[10_000], b'Z');
    }

    #[test]
    fn shrink_then_grow_reads_zeros_and_syncs_them() {
        let (_d, path, mut v) = fresh(&[7u8; 10_000]);
        v.set_len(100).unwrap();
        v.set_len(9_000).unwrap();
        assert_eq!(v.read(98, 4).unwrap(), [7, 7, 0, 0]);
        assert_eq!(v.read(8_000, 4).unwrap(), [0; 4]);
        v.sync(false).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), 9_000);
        assert!(on_disk[100..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_cut_with_no_survivors_restores_the_synced_file() {
        let (_d, path, mut v) = fresh(b"synced");
        v.write(0, b"LOST").unwrap();
        v.set_len(2).unwrap();
        let kept = v.cut(Model::NoneSurvive, &mut Rng::new(1)).unwrap();
        assert_eq!(
            kept,
            Kept {
                survived: 0,
                unsynced: 2
            }
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"synced");
    }

    #[test]
    fn a_prefix_cut_keeps_the_first_changes_in_order() {
        for seed in 0..20 {
            let (_d, path, mut v) = fresh(b"");
            for i in 0..5u8 {
                v.write(u64::from(i) * 2, &[b'a' + i; 2]).unwrap();
            }
            let kept = v.cut(Model::WritePrefix, &mut Rng::new(seed)).unwrap();
            let want: Vec<u8> = (0..kept.survived as u8)
                .flat_map(|i| [b'a' + i; 2])
                .collect();
            assert_eq!(std::fs::read(&path).unwrap(), want, "seed {seed}");
        }
    }

    #[test]
    fn a_page_subset_cut_keeps_whole_pages() {
        let mut kept_some = false;
        for seed in 0..20 {
            let (_d, path, mut v) = fresh(&[1u8; 3 * PAGE as usize]);
            v.write(0, &[2u8; 3 * PAGE as usize]).unwrap();
            let kept = v.cut(Model::PageSubset, &mut Rng::new(seed)).unwrap();
            let on_disk = std::fs::read(&path).unwrap();
            let new_pages = on_disk
                .chunks(PAGE as usize)
                .filter(|p| p.iter().all(|&b| b == 2))
                .count();
            let old_pages = on_disk
                .chunks(PAGE as usize)
                .filter(|p| p.iter().all(|&b| b == 1))
                .count();
            assert_eq!(new_pages + old_pages, 3, "seed {seed}: no torn page");
            assert_eq!(new_pages as u64, kept.survived, "seed {seed}");
            kept_some |= kept.survived > 0 && kept.survived < 3;
        }
        assert!(kept_some, "some seeds keep part of the pages");
    }
}
