//! The io_uring fallback, proven in child processes where io_uring really is unavailable.
//!
//! Each parent test re-executes this test binary (`std::env::current_exe()`), running one
//! `#[ignore]`d child test by its exact name with `WB_FALLBACK_CHILD` set. The child
//! installs a seccomp filter on every thread of its process (`SECCOMP_FILTER_FLAG_TSYNC`)
//! that makes `io_uring_setup` fail with a chosen errno — what Docker's default profile
//! (EPERM) or a kernel without io_uring (ENOSYS) does — and then uses the public API. The
//! parent checks the child's exit status and its stderr: the library reports the fallback
//! through the `log` facade, and the child routes `log` records to stderr.

mod common;

use std::io;
use std::path::Path;
use std::process::Output;

use writebehind::{errno, Backend, BackendKind, Config, Handle, WriteBehindFile};

const CHILD_ENV: &str = "WB_FALLBACK_CHILD";
const FALLBACK_LINE: &str = "writebehind: io_uring unavailable (";
const FALLBACK_TAIL: &str = "); using the threads backend";

/// Runs the child test `name` in a fresh process with its scratch dir; returns its output.
fn run_child(name: &str, dir: &Path) -> Output {
    let out = common::child::command(name)
        .env(CHILD_ENV, dir)
        .output()
        .expect("spawn the child");
    eprintln!(
        "child {name}: {}\n--- stdout\n{}--- stderr\n{}---",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child {name} did not run its test"
    );
    out
}

/// The scratch dir handed to a child, or `None` when this process is not a child (then
/// the child test does nothing: it must never filter the syscalls of a normal test run).
fn child_dir() -> Option<std::path::PathBuf> {
    match std::env::var_os(CHILD_ENV) {
        Some(d) => {
            common::log_to_stderr();
            Some(d.into())
        }
        None => {
            eprintln!("skipped: runs only as a child of the tests in tests/fallback.rs");
            None
        }
    }
}

/// Makes `io_uring_setup` fail with `errno` in every thread of this process, now and
/// later (seccomp filters are inherited by new threads; TSYNC covers existing ones).
fn deny_io_uring_setup(errno: i32) {
    deny_syscall(libc::SYS_io_uring_setup, errno);
}

/// Makes syscall `nr` fail with `errno` in every thread of this process.
fn deny_syscall(nr: libc::c_long, errno: i32) {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut filter = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0), // seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: nr as u32,
        },
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA),
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with plain integers; then seccomp(2) with a pointer to a valid BPF
    // program that outlives the call (the kernel copies it).
    unsafe {
        assert_eq!(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            0,
            "PR_SET_NO_NEW_PRIVS: {}",
            io::Error::last_os_error()
        );
        let rc = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &prog as *const libc::sock_fprog,
        );
        assert_eq!(rc, 0, "seccomp: {}", io::Error::last_os_error());
    }
}

/// io_uring_setup, called directly, fails with `want` (the filter is in place for this
/// thread and for a thread spawned now).
fn assert_setup_fails_with(want: i32) {
    let setup = || {
        let mut params = [0u8; 120]; // struct io_uring_params
                                     // SAFETY: io_uring_setup writes at most sizeof(io_uring_params) = 120 bytes into
                                     // `params`; the result is closed below if it is a descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
        let e = io::Error::last_os_error().raw_os_error();
        if fd >= 0 {
            // SAFETY: a descriptor we just got and own.
            unsafe { libc::close(fd as i32) };
            return None;
        }
        e
    };
    assert_eq!(setup(), Some(want), "io_uring_setup on this thread");
    assert_eq!(
        std::thread::spawn(setup).join().unwrap(),
        Some(want),
        "io_uring_setup on a new thread"
    );
}

/// A write / force / read / close / reopen cycle through a handle opened with `cfg`,
/// which must run on the threads backend.
fn cycle_on_threads(path: &Path, cfg: &Config) {
    let page = |i: u64| common::pattern(i, 4096);
    let h = WriteBehindFile::create(path, cfg).expect("Auto must open on the threads backend");
    assert_eq!(h.backend(), BackendKind::Threads);
    assert_eq!(h.stats().backend, BackendKind::Threads);
    for i in 0..32u64 {
        h.write(i * 4096, &page(i)).unwrap();
    }
    // A short tail: 4 bytes, or one aligned block in direct mode.
    let tail = common::pattern(99, common::small_block(h.alignment()));
    let end = 32 * 4096 + tail.len() as u64;
    assert_eq!(h.append(&tail).unwrap(), 32 * 4096);
    h.force().unwrap();
    let mut buf = vec![0u8; 4096];
    h.read(5 * 4096, &mut buf).unwrap();
    assert_eq!(buf, page(5));
    let st = h.close().unwrap();
    assert_eq!(st.backend, BackendKind::Threads);
    assert!(st.fsyncs >= 1 && st.bytes_written >= end, "{st:?}");

    let h = WriteBehindFile::open(path, cfg).unwrap();
    assert_eq!(h.backend(), BackendKind::Threads);
    assert_eq!(h.end_position(), end);
    for i in 0..32u64 {
        h.read(i * 4096, &mut buf).unwrap();
        assert_eq!(buf, page(i), "page {i} after reopen");
    }
    let mut got = vec![0u8; tail.len()];
    h.read(32 * 4096, &mut got).unwrap();
    assert_eq!(got, tail);
    h.close().unwrap();
}

/// The child for an "unavailable" errno: Auto falls back, IoUring is refused with it.
fn unavailable_child(code: i32) {
    let Some(dir) = child_dir() else { return };
    deny_io_uring_setup(code);
    assert_setup_fails_with(code);
    let path = dir.join("data");
    let e = WriteBehindFile::create(&path, &Config::default().backend(Backend::IoUring))
        .expect_err("Backend::IoUring must not open without io_uring");
    assert_eq!(errno(&e), Some(code), "{e}");
    eprintln!("Backend::IoUring refused: {e}");
    cycle_on_threads(&path, &Config::default().backend(Backend::Auto));
    // Direct I/O on the fallback, too.
    cycle_on_threads(&dir.join("direct"), &Config::default().direct_io(true));
}

#[test]
#[ignore = "child process of auto_falls_back_to_threads_when_io_uring_is_denied_eperm"]
fn child_eperm() {
    unavailable_child(libc::EPERM);
}

#[test]
#[ignore = "child process of auto_falls_back_to_threads_when_io_uring_is_missing_enosys"]
fn child_enosys() {
    unavailable_child(libc::ENOSYS);
}

#[test]
#[ignore = "child process of auto_reports_other_setup_errors_enomem"]
fn child_enomem() {
    let Some(dir) = child_dir() else { return };
    deny_io_uring_setup(libc::ENOMEM);
    assert_setup_fails_with(libc::ENOMEM);
    let path = dir.join("data");
    for backend in [Backend::Auto, Backend::IoUring] {
        let e = WriteBehindFile::create(&path, &Config::default().backend(backend))
            .err()
            .unwrap_or_else(|| panic!("{backend:?} must report ENOMEM, not fall back"));
        assert_eq!(errno(&e), Some(libc::ENOMEM), "{backend:?}: {e}");
        eprintln!("{backend:?} refused: {e}");
    }
    // Asking for the threads backend explicitly still works.
    cycle_on_threads(&path, &Config::default().backend(Backend::Threads));
}

/// io_uring_setup works but `IORING_REGISTER_PROBE` is refused with EPERM, so the probe
/// cannot confirm the opcodes: Auto must fall back rather than guess.
#[test]
#[ignore = "child process of auto_falls_back_when_the_opcode_probe_is_refused"]
fn child_register_eperm() {
    let Some(dir) = child_dir() else { return };
    deny_syscall(libc::SYS_io_uring_register, libc::EPERM);
    let path = dir.join("data");
    cycle_on_threads(&path, &Config::default());
    cycle_on_threads(&dir.join("direct"), &Config::default().direct_io(true));
}

fn check_fallback(child: &str, reason: &str) {
    let dir = common::tempdir();
    let out = run_child(child, dir.path());
    assert!(out.status.success(), "child {child} failed: {}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(FALLBACK_LINE))
        .collect();
    // One line per Auto open: two cycles of create + open.
    assert_eq!(lines.len(), 4, "fallback log lines: {lines:?}");
    for l in lines {
        assert!(l.ends_with(FALLBACK_TAIL), "{l}");
        assert!(
            l.to_lowercase().contains(reason),
            "{l} does not say {reason:?}"
        );
    }
}

/// EPERM (a seccomp profile, `kernel.io_uring_disabled`): Auto uses the threads backend,
/// says so through `log` and in `Stats`, and the handle works; IoUring is refused with EPERM.
#[test]
fn auto_falls_back_to_threads_when_io_uring_is_denied_eperm() {
    check_fallback("child_eperm", "permission");
}

/// ENOSYS (a kernel without io_uring): the same fallback.
#[test]
fn auto_falls_back_to_threads_when_io_uring_is_missing_enosys() {
    check_fallback("child_enosys", "not implemented");
}

/// The opcode probe refused (EPERM on `io_uring_register`): Auto falls back too.
#[test]
fn auto_falls_back_when_the_opcode_probe_is_refused() {
    check_fallback("child_register_eperm", "register_probe");
}

/// Any other setup error (here ENOMEM) is a real error: Auto reports it and does not
/// fall back; the threads backend chosen explicitly still works.
#[test]
fn auto_reports_other_setup_errors_enomem() {
    let dir = common::tempdir();
    let out = run_child("child_enomem", dir.path());
    assert!(out.status.success(), "child failed: {}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(FALLBACK_LINE),
        "fell back on ENOMEM:\n{stderr}"
    );
}

/// Without a filter (this machine has io_uring), Auto picks io_uring and logs nothing.
#[test]
fn auto_uses_io_uring_when_available() {
    let dir = common::tempdir();
    let h = WriteBehindFile::create(dir.path().join("data"), &Config::default()).unwrap();
    assert_eq!(h.backend(), BackendKind::IoUring);
    assert_eq!(h.stats().backend, BackendKind::IoUring);
    h.close().unwrap();
}
