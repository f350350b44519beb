//! What can go wrong setting up or harvesting a KVM dirty ring.

use std::fmt;

/// A failure of the dirty-ring layer. Kept apart from [`crate::Error`]: it
/// carries the kernel's errno and the ioctl that returned it, which is what
/// a VMM's error report needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmError {
    /// The ring size is not one this kernel accepts (not a power of two,
    /// below one page of entries, or above the kernel's maximum).
    BadRingSize {
        /// Entries asked for.
        entries: u32,
        /// The kernel's maximum, in entries.
        max: u32,
    },
    /// The kernel does not offer `KVM_CAP_DIRTY_LOG_RING(_ACQ_REL)`.
    Unsupported,
    /// An ioctl or mmap failed.
    Os {
        /// What was being done, e.g. `"KVM_RESET_DIRTY_RINGS"`.
        what: &'static str,
        /// The positive errno.
        errno: i32,
    },
}

impl KvmError {
    /// `what` failed with the calling thread's current errno.
    pub(crate) fn last_os(what: &'static str) -> Self {
        KvmError::Os { what, errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO) }
    }

    /// The positive errno value a C caller would get.
    pub fn errno(&self) -> i32 {
        match self {
            KvmError::BadRingSize { .. } => libc::EINVAL,
            KvmError::Unsupported => libc::ENOTSUP,
            KvmError::Os { errno, .. } => *errno,
        }
    }
}

impl fmt::Display for KvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmError::BadRingSize { entries, max } => write!(
                f,
                "dirty ring size {entries} is not a power of two in {}..={max} entries (this kernel's range)",
                super::MIN_RING_ENTRIES
            ),
            KvmError::Unsupported => f.write_str("this kernel does not offer KVM_CAP_DIRTY_LOG_RING"),
            KvmError::Os { what, errno } => {
                write!(f, "{what}: {}", std::io::Error::from_raw_os_error(*errno))
            }
        }
    }
}

impl std::error::Error for KvmError {}
