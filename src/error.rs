//! The crate's error type and its single mapping to negative errno values.
//!
//! The C ABI returns `0` or `-errno` (QEMU's convention); [`Error::errno`] is
//! the only place that chooses the number, so every engine reports the same
//! condition the same way.

use std::fmt;

/// Why a vmig operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An argument is NULL, out of range or inconsistent (`EINVAL`).
    InvalidArgument(&'static str),
    /// A ring has no free slot (`ENOBUFS`, DPDK's word for a full ring).
    Full,
    /// A ring has no ready item (`ENOENT`, DPDK's word for an empty ring).
    Empty,
    /// Every worker is busy and the caller asked not to wait (`EBUSY`).
    Busy,
    /// A resource that allows one user already has one (`EBUSY`), e.g. a
    /// second consumer handle on a ring.
    InUse(&'static str),
    /// Memory could not be allocated (`ENOMEM`).
    OutOfMemory,
    /// Input data is corrupt, truncated or of the wrong length (`EBADMSG`).
    BadMessage(&'static str),
    /// A worker thread could not be started (`EAGAIN`, as `pthread_create`).
    ThreadSpawn,
    /// An internal bug was caught (a panic) and the operation failed (`EIO`).
    /// The process and the guest survive; the migration fails.
    Internal(&'static str),
    /// `error`, raised by the C call `call` (the function and its argument
    /// values), so that the message names the value that was wrong. Its
    /// errno is `error`'s. Built by [`Error::in_call`].
    InCall {
        /// The call, e.g. `vmig_ring_new(capacity 1000, flags 0x0)`.
        call: String,
        /// What went wrong.
        error: Box<Error>,
    },
    /// The operation needs something this build does not have, e.g. a
    /// deflate backend whose cargo feature is off (`EOPNOTSUPP`).
    Unsupported(&'static str),
    /// A system call failed with this errno (positive); `what` names the call.
    Os {
        /// The errno the call returned.
        errno: i32,
        /// Which call failed.
        what: &'static str,
    },
}

impl Error {
    /// The positive errno value for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::InvalidArgument(_) => libc::EINVAL,
            Error::Full => libc::ENOBUFS,
            Error::Empty => libc::ENOENT,
            Error::Busy => libc::EBUSY,
            Error::InUse(_) => libc::EBUSY,
            Error::OutOfMemory => libc::ENOMEM,
            Error::BadMessage(_) => libc::EBADMSG,
            Error::ThreadSpawn => libc::EAGAIN,
            Error::Internal(_) => libc::EIO,
            Error::InCall { error, .. } => error.errno(),
            Error::Unsupported(_) => libc::EOPNOTSUPP,
            Error::Os { errno, .. } => *errno,
        }
    }

    /// Names the failed call (or the values checked) in an argument error
    /// (`EINVAL`), so its message says which value was wrong; any other
    /// error is returned as it is. `call` runs only on that path, so the
    /// hot paths' errors (`Full`, `Busy`) never format or allocate.
    pub fn in_call(self, call: impl FnOnce() -> String) -> Error {
        if self.errno() == libc::EINVAL {
            Error::InCall { call: call(), error: Box::new(self) }
        } else {
            self
        }
    }

    /// The value a C function returns for this error: `-errno`.
    pub fn to_neg_errno(&self) -> i32 {
        -self.errno()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::Full => f.write_str("ring is full"),
            Error::Empty => f.write_str("ring is empty"),
            Error::Busy => f.write_str("all workers are busy"),
            Error::InUse(what) => write!(f, "in use: {what}"),
            Error::OutOfMemory => f.write_str("out of memory"),
            Error::BadMessage(what) => write!(f, "bad message: {what}"),
            Error::ThreadSpawn => f.write_str("could not spawn a worker thread"),
            Error::Internal(what) => write!(f, "internal error: {what}"),
            Error::InCall { call, error } => write!(f, "{call}: {error}"),
            Error::Unsupported(what) => write!(f, "not supported by this build: {what}"),
            Error::Os { errno, what } => write!(f, "{what}: {}", std::io::Error::from_raw_os_error(*errno)),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// An [`Error::Os`] from an `io::Error` (EIO if it carries no errno).
    pub fn os(e: &std::io::Error, what: &'static str) -> Error {
        Error::Os { errno: e.raw_os_error().unwrap_or(libc::EIO), what }
    }
}

/// Result alias used throughout vmig.
pub type Result<T> = std::result::Result<T, Error>;
