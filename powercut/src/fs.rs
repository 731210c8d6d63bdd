//! The FUSE side: one flat directory of regular files over a backing directory.
//!
//! Lookups, attributes and reads of synced bytes come from the backing directory; writes
//! and size changes go to each file's [`Volatile`] cache; `fsync`/`fdatasync` persist a
//! file's cache and `fsyncdir` the names created in the directory. After a power cut every
//! operation fails with `EIO`.
//!
//! Every open is answered with `FOPEN_DIRECT_IO`, so the kernel keeps no page cache of
//! these files: each `read`/`write` call (buffered or `O_DIRECT`) reaches this file system,
//! and what a power cut drops is not still readable from the kernel's cache. The kernel's
//! writeback cache is never enabled (fuser does not ask for `FUSE_WRITEBACK_CACHE`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::cache::Volatile;
use crate::rng::Rng;
use crate::{Counts, CutReport, Delays, Model};

/// Attributes and entries are never cached by the kernel: sizes are volatile.
const TTL: Duration = Duration::ZERO;

struct Node {
    name: OsString,
    cache: Volatile,
}

/// Everything behind the file system's one lock.
pub(crate) struct Inner {
    frozen: bool,
    dir: PathBuf,
    nodes: HashMap<u64, Node>,
    by_name: BTreeMap<OsString, u64>,
    next_ino: u64,
    /// Names created since the directory was last synced: lost in a power cut.
    unsynced_names: HashSet<OsString>,
    counts: Counts,
    /// File syncs (`fsync` + `fdatasync`) per name, kept across unlinks.
    syncs_by_name: HashMap<OsString, u64>,
}

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    delays: Delays,
    delay_rng: Mutex<Rng>,
}

impl Shared {
    pub(crate) fn new(dir: PathBuf, delays: Delays, seed: u64) -> Self {
        Shared {
            inner: Mutex::new(Inner {
                frozen: false,
                dir,
                nodes: HashMap::new(),
                by_name: BTreeMap::new(),
                next_ino: 2,
                unsynced_names: HashSet::new(),
                counts: Counts::default(),
                syncs_by_name: HashMap::new(),
            }),
            delays,
            delay_rng: Mutex::new(Rng::new(seed)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock, or `EIO` once the power is cut.
    fn live(&self) -> Result<MutexGuard<'_, Inner>, Errno> {
        let inner = self.lock();
        if inner.frozen {
            return Err(Errno::EIO);
        }
        Ok(inner)
    }

    /// Sleeps a seeded random time in `range` (outside the lock, so other requests run).
    fn delay(&self, range: Option<(Duration, Duration)>) {
        let Some((lo, hi)) = range else { return };
        let span = hi.saturating_sub(lo).as_nanos() as u64;
        let extra = if span == 0 {
            0
        } else {
            let mut rng = self
                .delay_rng
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            rng.below(span + 1)
        };
        std::thread::sleep(lo + Duration::from_nanos(extra));
    }

    pub(crate) fn counts(&self) -> Counts {
        self.lock().counts
    }

    pub(crate) fn file_syncs(&self, name: &OsStr) -> u64 {
        self.lock().syncs_by_name.get(name).copied().unwrap_or(0)
    }

    pub(crate) fn cut(&self, model: Model, seed: u64) -> io::Result<CutReport> {
        let mut inner = self.lock();
        if inner.frozen {
            return Err(io::Error::other("the power is already cut"));
        }
        inner.frozen = true;
        let mut rng = Rng::new(seed);
        let mut report = CutReport::default();
        // Files in name order, so that a seed repeats the same choices.
        let inos: Vec<u64> = inner.by_name.values().copied().collect();
        for ino in inos {
            let node = inner.nodes.get_mut(&ino).expect("named nodes exist");
            let kept = node.cache.cut(model, &mut rng)?;
            report.survived += kept.survived;
            report.unsynced += kept.unsynced;
        }
        let lost: Vec<OsString> = inner.unsynced_names.drain().collect();
        for name in lost {
            std::fs::remove_file(inner.dir.join(&name))?;
            report.names_lost += 1;
        }
        File::open(&inner.dir)?.sync_all()?;
        Ok(report)
    }
}

impl Inner {
    /// The inode of `name` in the backing directory, opening its cache on first use.
    fn node_of(&mut self, name: &OsStr) -> io::Result<u64> {
        if let Some(&ino) = self.by_name.get(name) {
            return Ok(ino);
        }
        let path = self.dir.join(name);
        if !std::fs::symlink_metadata(&path)?.is_file() {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        self.add(name, file)
    }

    fn add(&mut self, name: &OsStr, file: File) -> io::Result<u64> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                name: name.to_owned(),
                cache: Volatile::new(file)?,
            },
        );
        self.by_name.insert(name.to_owned(), ino);
        Ok(ino)
    }

    fn node(&mut self, ino: INodeNo) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)
    }

    fn attr(&mut self, ino: INodeNo) -> Result<FileAttr, Errno> {
        if ino == INodeNo::ROOT {
            let meta = std::fs::metadata(&self.dir)?;
            return Ok(attr_of(ino, FileType::Directory, meta.len(), &meta));
        }
        let node = self.node(ino)?;
        let meta = node.cache.backing().metadata()?;
        Ok(attr_of(
            ino,
            FileType::RegularFile,
            node.cache.size(),
            &meta,
        ))
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs.max(0) as u64, nsecs.clamp(0, 999_999_999) as u32)
}

fn attr_of(ino: INodeNo, kind: FileType, size: u64, meta: &std::fs::Metadata) -> FileAttr {
    FileAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// The file system as fuser sees it.
pub(crate) struct PowerCutFs(pub(crate) std::sync::Arc<Shared>);

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = (|| {
            let mut inner = self.0.live()?;
            if parent != INodeNo::ROOT {
                return Err(Errno::ENOENT);
            }
            let ino = inner.node_of(name)?;
            inner.attr(INodeNo(ino))
        })();
        match r {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.live().and_then(|mut inner| inner.attr(ino)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = (|| {
            let mut inner = self.0.live()?;
            if mode.is_some() || uid.is_some() || gid.is_some() {
                return Err(Errno::EPERM);
            }
            if let Some(size) = size {
                inner.node(ino)?.cache.set_len(size)?;
            }
            inner.attr(ino) // time changes are ignored: only data and size matter here
        })();
        match r {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self
            .0
            .live()
            .and_then(|mut inner| inner.node(ino).map(|_| ()))
        {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = (|| {
            let mut inner = self.0.live()?;
            if parent != INodeNo::ROOT {
                return Err(Errno::ENOENT);
            }
            let path = inner.dir.join(name);
            let existed = path.exists();
            if existed && flags & libc::O_EXCL != 0 {
                return Err(Errno::EEXIST);
            }
            let ino = if existed {
                inner.node_of(name)?
            } else {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(mode & 0o7777)
                    .open(&path)?;
                inner.unsynced_names.insert(name.to_owned());
                inner.add(name, file)?
            };
            if existed && flags & libc::O_TRUNC != 0 {
                inner.node(INodeNo(ino))?.cache.set_len(0)?;
            }
            inner.attr(INodeNo(ino))
        })();
        match r {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = (|| {
            let mut inner = self.0.live()?;
            Ok::<_, Errno>(inner.node(ino)?.cache.read(offset, size as usize)?)
        })();
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The write is in flight while it sleeps: a sync that runs meanwhile does not
        // cover it, as a device's cache flush does not cover a write not yet completed.
        self.0.delay(self.0.delays.write);
        let r = (|| {
            let mut inner = self.0.live()?;
            inner.node(ino)?.cache.write(offset, data)?;
            inner.counts.writes += 1;
            Ok::<_, Errno>(())
        })();
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) persists nothing.
        match self.0.live() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.0.delay(self.0.delays.sync);
        let r = (|| {
            let mut inner = self.0.live()?;
            let node = inner.node(ino)?;
            node.cache.sync(datasync)?;
            let name = node.name.clone();
            *inner.syncs_by_name.entry(name).or_default() += 1;
            if datasync {
                inner.counts.fdatasyncs += 1;
            } else {
                inner.counts.fsyncs += 1;
            }
            Ok::<_, Errno>(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = (|| {
            let mut inner = self.0.live()?;
            if ino != INodeNo::ROOT {
                return Err(Errno::ENOTDIR);
            }
            let mut names: Vec<OsString> = std::fs::read_dir(&inner.dir)?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            let mut entries = Vec::new();
            for name in names {
                if let Ok(ino) = inner.node_of(&name) {
                    entries.push((ino, name));
                }
            }
            Ok(entries)
        })();
        match r {
            Ok(entries) => {
                for (i, (ino, name)) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(*ino), i as u64 + 1, FileType::RegularFile, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let mut inner = self.0.live()?;
            File::open(&inner.dir)?.sync_all()?;
            inner.unsynced_names.clear();
            inner.counts.dir_syncs += 1;
            Ok::<_, Errno>(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        // Immediate and durable: the tests only unlink to clean up.
        let r = (|| {
            let mut inner = self.0.live()?;
            if parent != INodeNo::ROOT {
                return Err(Errno::ENOENT);
            }
            std::fs::remove_file(inner.dir.join(name))?;
            if let Some(ino) = inner.by_name.remove(name) {
                inner.nodes.remove(&ino);
            }
            inner.unsynced_names.remove(name);
            Ok::<_, Errno>(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let mut inner = self.0.live()?;
            let cache = &mut inner.node(ino)?.cache;
            let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
            let zero = mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0;
            if mode
                & !(libc::FALLOC_FL_KEEP_SIZE
                    | libc::FALLOC_FL_PUNCH_HOLE
                    | libc::FALLOC_FL_ZERO_RANGE)
                != 0
            {
                return Err(Errno::EOPNOTSUPP);
            }
            if zero {
                cache.zero_range(offset, length)?;
            }
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            if !keep_size && end > cache.size() {
                cache.set_len(end)?;
            }
            Ok::<_, Errno>(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.0.live() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
