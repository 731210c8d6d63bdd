//! A fresh file system (ext4 with its journal, or XFS) in an image file, mounted through a
//! loop device: for the tests that must see how a real, journaled file system behaves
//! (the project's own root is ext4 without a journal). Needs root and the `mkfs` tool
//! (`.ci/run` installs `e2fsprogs` and `xfsprogs`).

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

/// Runs a command; its failure as a message.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A mounted image; unmounted (and the loop device released) on drop.
pub struct LoopFs {
    dir: tempfile::TempDir,
    fstype: &'static str,
    mounted: bool,
}

impl LoopFs {
    /// Makes a `bytes`-long image of `fstype` (`"ext4"` or `"xfs"`) and mounts it.
    pub fn new(fstype: &'static str, bytes: u64) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root to mount a loop device".into());
        }
        let dir = super::tempdir();
        let img = dir.path().join("fs.img");
        File::create(&img)
            .and_then(|f| f.set_len(bytes))
            .map_err(|e| format!("create {img:?}: {e}"))?;
        let mkfs = match fstype {
            "ext4" => Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&img)
                .output(),
            "xfs" => Command::new("mkfs.xfs")
                .args(["-q", "-f"])
                .arg(&img)
                .output(),
            other => return Err(format!("no mkfs for {other}")),
        };
        match mkfs {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(format!(
                    "mkfs.{fstype}: {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
            Err(e) => return Err(format!("mkfs.{fstype}: {e}")),
        }
        std::fs::create_dir(dir.path().join("mnt")).map_err(|e| e.to_string())?;
        let mut fs = LoopFs {
            dir,
            fstype,
            mounted: false,
        };
        fs.mount()?;
        Ok(fs)
    }

    /// The mount point.
    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    pub fn mount(&mut self) -> Result<(), String> {
        let img = self.dir.path().join("fs.img");
        run(Command::new("mount")
            .args(["-t", self.fstype, "-o", "loop"])
            .arg(&img)
            .arg(self.mnt()))?;
        self.mounted = true;
        Ok(())
    }

    pub fn unmount(&mut self) -> Result<(), String> {
        run(Command::new("umount").arg(self.mnt()))?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = self.unmount() {
                eprintln!("{e}; detaching lazily");
                let _ = run(Command::new("umount").arg("-l").arg(self.mnt()));
            }
        }
    }
}

/// The file system, or `None` after printing why it cannot be had (a failure under CI).
pub fn loop_fs(what: &str, fstype: &'static str, bytes: u64) -> Option<LoopFs> {
    match LoopFs::new(fstype, bytes) {
        Ok(fs) => Some(fs),
        Err(reason) => {
            super::skip_or_fail(what, &format!("cannot mount a loop {fstype}: {reason}"));
            None
        }
    }
}
