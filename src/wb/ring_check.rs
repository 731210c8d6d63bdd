//! For unit tests that need an io_uring ring: where this process may not set one up (a
//! container's default seccomp profile, `kernel.io_uring_disabled`, an old kernel), they
//! skip and print why, as the integration tests do (tests/common/mod.rs `skip_or_fail`);
//! under `CI=true` they fail instead, because CI must run them.

use super::engine::backend::uring::{probe, ProbeError};

/// Whether the test `name` can have a ring. `false`: io_uring is unavailable here and the
/// test should return at once (the reason is printed). Panics under `CI=true` instead. A
/// setup failure that is not "unavailable" (`ENOMEM`, ...) returns `true`, so the test
/// runs and reports that error itself.
// The module is test-only already (src/wb/mod.rs); repeated here for tools that read one
// file at a time, such as the check that the library prints nothing outside tests.
#[cfg(test)]
pub(crate) fn ring_available(name: &str) -> bool {
    match probe() {
        Ok(()) | Err(ProbeError::Failed(_)) => true,
        Err(ProbeError::Unavailable(reason)) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{name}: needs io_uring, which is unavailable under CI=true: {reason}");
            }
            eprintln!("skipped {name}: io_uring is unavailable here: {reason}");
            false
        }
    }
}
