//! Error construction: every error is a `std::io::Error` whose errno can be recovered.

use std::fmt;
use std::io;

/// An errno together with a message that says what was wrong.
///
/// `std::io::Error` cannot carry both an OS error code and a custom message, so errors
/// the crate raises itself with a useful message (a misaligned direct-I/O write, say)
/// wrap this payload; [`errno`] recovers the code from either form.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OsError {
    /// The errno value, for example `libc::EINVAL`.
    pub code: i32,
    /// What was wrong, in words.
    pub message: String,
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = format!("(os error {})", self.code);
        if self.message.ends_with(&suffix) {
            // The message already quotes an io::Error with this code.
            f.write_str(&self.message)
        } else {
            write!(f, "{} {suffix}", self.message)
        }
    }
}

impl std::error::Error for OsError {}

/// The errno carried by an error from this crate (or from the OS).
///
/// Returns `raw_os_error()` when set, otherwise the code of an [`OsError`] payload.
///
/// ```
/// let e = std::io::Error::from_raw_os_error(libc::EDOM);
/// assert_eq!(writebehind::errno(&e), Some(libc::EDOM));
/// ```
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<OsError>())
            .map(|os| os.code)
    })
}

/// An error that is just an errno (`raw_os_error()` returns it).
pub(crate) fn os(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// An errno with a message; recover the code with [`errno`].
pub(crate) fn os_msg(code: i32, message: impl Into<String>) -> io::Error {
    let kind = io::Error::from_raw_os_error(code).kind();
    io::Error::new(
        kind,
        OsError {
            code,
            message: message.into(),
        },
    )
}

/// `EDOM`: the range lies (partly) below the start or past the end.
pub(crate) fn edom() -> io::Error {
    os(libc::EDOM)
}

/// A copy of an error that keeps its errno, for errors that are reported more than once
/// (a latched failure is returned to every waiter).
pub(crate) fn duplicate(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => os(code),
        None => match errno(e) {
            Some(code) => os_msg(code, e.to_string()),
            None => io::Error::new(e.kind(), e.to_string()),
        },
    }
}

/// `EINVAL` naming the cap when one call asks for more than `max` bytes (the handle's
/// [`Config::max_io_bytes`](crate::Config::max_io_bytes)). Checked before anything is
/// allocated, locked or reserved, so a huge length costs nothing and changes nothing.
pub(crate) fn check_io_len(len: usize, max: usize) -> io::Result<()> {
    if len > max {
        return Err(os_msg(
            libc::EINVAL,
            format!("a call of {len} bytes exceeds max_io_bytes ({max})"),
        ));
    }
    Ok(())
}

/// The end of `[offset, offset + len)`, or `EINVAL` when it overflows `u64`.
pub(crate) fn range_end(offset: u64, len: usize) -> io::Result<u64> {
    offset.checked_add(len as u64).ok_or_else(|| {
        os_msg(
            libc::EINVAL,
            format!("offset {offset} + length {len} overflows u64"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_survives_both_forms_and_duplication() {
        let plain = os(libc::EDOM);
        assert_eq!(plain.raw_os_error(), Some(libc::EDOM));
        let msg = os_msg(libc::EINVAL, "needs 4096-byte alignment");
        assert_eq!(errno(&msg), Some(libc::EINVAL));
        assert!(msg.to_string().contains("4096"));
        assert_eq!(errno(&duplicate(&msg)), Some(libc::EINVAL));
        assert_eq!(duplicate(&plain).raw_os_error(), Some(libc::EDOM));
        assert_eq!(
            errno(&range_end(u64::MAX, 1).unwrap_err()),
            Some(libc::EINVAL)
        );
        assert_eq!(range_end(1, 2).unwrap(), 3);
        let wrapped = os_msg(libc::ENOMEM, format!("setup failed: {}", os(libc::ENOMEM)));
        assert_eq!(wrapped.to_string().matches("(os error 12)").count(), 1);
    }
}
