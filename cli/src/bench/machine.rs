//! What the benchmark ran on: kernel, CPUs, the file system of `--dir` and its
//! direct-I/O alignment. Reported in the table header and in every JSON run.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The machine and the directory the benchmark writes in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Machine {
    /// `uname -sr`, e.g. `Linux 6.18.44-fc-v669`.
    pub kernel: String,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// The directory of the temporary file, made absolute.
    pub dir: PathBuf,
    /// The file system type of `dir` (from `statfs` `f_type`, refined by the mount table).
    pub filesystem: String,
    /// `statfs` `f_type` in hex.
    pub fs_magic: String,
    /// The direct-I/O alignment found for a file in `dir`; `null` if O_DIRECT is refused.
    pub dio_alignment: Option<u64>,
    /// Where the alignment came from: `statx`, `sysfs` (logical block size) or `default`.
    pub alignment_source: String,
    /// Bytes available to this user in `dir`'s file system.
    pub free_bytes: u64,
}

impl Machine {
    /// Probes the machine and `dir`. Creates and removes a small probe file in `dir`;
    /// fails when `dir` is not a writable directory.
    pub fn probe(dir: &Path) -> io::Result<Machine> {
        let meta = fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory",
            ));
        }
        let dir = fs::canonicalize(dir)?;
        let st = nix::sys::statfs::statfs(&dir)?;
        let magic = st.filesystem_type().0 as u64;
        let vfs = nix::sys::statvfs::statvfs(&dir)?;
        let free_bytes = (vfs.blocks_available() as u64).saturating_mul(vfs.fragment_size() as u64);
        let (dio_alignment, alignment_source) = probe_alignment(&dir)?;
        Ok(Machine {
            kernel: kernel(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            filesystem: fs_name(magic, &dir),
            fs_magic: format!("{magic:#x}"),
            dir,
            dio_alignment,
            alignment_source: alignment_source.to_string(),
            free_bytes,
        })
    }

    /// One line for the table header.
    pub fn summary(&self) -> String {
        let align = match self.dio_alignment {
            Some(a) => format!("{a} B ({})", self.alignment_source),
            None => "none (O_DIRECT refused)".into(),
        };
        format!(
            "{}, {} CPUs, {} at {}, direct-I/O alignment {align}",
            self.kernel,
            self.cpus,
            self.filesystem,
            self.dir.display()
        )
    }
}

fn kernel() -> String {
    let read = |p: &str| fs::read_to_string(p).map(|s| s.trim().to_string()).ok();
    match (
        read("/proc/sys/kernel/ostype"),
        read("/proc/sys/kernel/osrelease"),
    ) {
        (Some(os), Some(rel)) => format!("{os} {rel}"),
        _ => "unknown".into(),
    }
}

/// Opens a probe file in `dir` with O_DIRECT and asks for its alignment. `None` when the
/// file system refuses O_DIRECT (`EINVAL` at open).
fn probe_alignment(dir: &Path) -> io::Result<(Option<u64>, &'static str)> {
    let path = dir.join(format!(".writebehind-probe-{}", std::process::id()));
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // O_DIRECT refused; make sure the directory is writable at all.
            File::create_new(&path)?;
            let _ = fs::remove_file(&path);
            return Ok((None, "none"));
        }
        Err(e) => return Err(e),
    };
    let _ = fs::remove_file(&path);
    let a = writebehind::dio_alignment(&file);
    Ok((Some(a.bytes as u64), a.source.name()))
}

/// A name for a `statfs` magic number; ext2/3/4 share one, so the mount table decides.
fn fs_name(magic: u64, dir: &Path) -> String {
    let name = match magic {
        0xEF53 => return mount_fstype(dir).unwrap_or_else(|| "ext2/3/4".into()),
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x8584_58F6 => "ramfs",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        0xCA45_1A4E => "bcachefs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        0xFF53_4D42 => "cifs",
        0xFE53_4D42 => "smb2",
        0x6573_5546 => "fuse",
        0x0102_1997 => "9p",
        0x4D44 => "vfat",
        0x5346_544E => "ntfs",
        0x7366_746E => "ntfs3",
        0x7371_7368 => "squashfs",
        _ => return mount_fstype(dir).unwrap_or_else(|| format!("unknown ({magic:#x})")),
    };
    name.into()
}

/// The type of the mount holding `dir` (longest matching mount point in
/// `/proc/self/mountinfo`).
fn mount_fstype(dir: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let mount_point = fields.get(4)?;
        let sep = fields.iter().position(|f| *f == "-")?;
        let fstype = fields.get(sep + 1)?;
        let mp = Path::new(mount_point);
        if dir.starts_with(mp) {
            let depth = mp.components().count();
            if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, fstype.to_string()));
            }
        }
    }
    best.map(|(_, t)| t)
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_string(secs)
}

fn utc_string(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_right() {
        assert_eq!(utc_string(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_string(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_string(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn probe_describes_a_temp_dir_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let m = Machine::probe(dir.path()).unwrap();
        assert!(m.cpus >= 1);
        assert!(m.kernel.starts_with("Linux"), "{}", m.kernel);
        assert!(!m.filesystem.is_empty());
        if let Some(a) = m.dio_alignment {
            assert!(a.is_power_of_two());
        }
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe file left behind"
        );
    }

    #[test]
    fn probe_rejects_a_missing_dir_and_a_file() {
        assert!(Machine::probe(Path::new("/nonexistent/dir")).is_err());
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(Machine::probe(f.path()).is_err());
    }
}
