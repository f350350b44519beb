//! `vmig_last_error()`: the text of the calling thread's last failed call.
//!
//! rustls-ffi hands C the message of an error (`rustls_error`); a VMM's
//! `error_report()` then says which value was wrong, not just `EINVAL`.
//! Every entry point records its error here through the `catch_*` wrappers
//! in `ffi/mod.rs`, so no function can fail without leaving a message.
//!
//! The record is a thread-local [`Error`], not a formatted string: storing
//! the hot-path errors (`-ENOBUFS` from a full ring, `-EBUSY` from a busy
//! pool) allocates nothing, and the text is formatted only when C asks.

use std::cell::RefCell;
use std::ffi::c_char;

use super::catch_or;
use crate::error::Error;

thread_local! {
    /// The calling thread's last error; kept until a later call fails.
    static LAST: RefCell<Option<Error>> = const { RefCell::new(None) };
}

/// Records `e` as the calling thread's last error.
pub(crate) fn record(e: Error) {
    // `try_with`: during thread teardown the slot may be gone; a call made
    // then fails without a message rather than panicking.
    let _ = LAST.try_with(|l| {
        if let Ok(mut slot) = l.try_borrow_mut() {
            *slot = Some(e);
        }
    });
}

/// The calling thread's last error message, if any.
pub(crate) fn message() -> Option<String> {
    LAST.try_with(|l| l.try_borrow().ok().and_then(|e| e.as_ref().map(Error::to_string))).ok().flatten()
}

/// Copies the message of the calling thread's last failed vmig call into
/// `buf`: at most `len - 1` bytes and a terminating NUL (an empty string
/// when there is none). Returns the message's full length in bytes without
/// the NUL, so a return value >= `len` means it was truncated; 0 when no
/// vmig call has failed on this thread. `buf` may be NULL (with any `len`)
/// or `len` 0 to ask for the length only.
///
/// A failed call is one that returned a negative errno, NULL (constructors,
/// with errno set) or its documented fallback for a bad handle or argument.
/// The message names the function and the value that was wrong, e.g.
/// "vmig_ring_new(capacity 1000, flags 0x0): invalid argument: capacity
/// must be a power of two in 2..=2^30". Successful calls leave it in place
/// (as errno): read it right after the call that failed.
///
/// Thread-safety: may be called from any thread; each thread has its own
/// message, so another thread's failures never change it.
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn vmig_last_error(buf: *mut c_char, len: usize) -> usize {
    catch_or(0, || {
        let msg = message().unwrap_or_default();
        if !buf.is_null() && len > 0 {
            let n = msg.len().min(len - 1);
            // SAFETY: `buf` is valid for `len` bytes (contract) and n < len;
            // `msg` is a distinct Rust allocation.
            unsafe {
                std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
                *buf.add(n) = 0;
            }
        }
        msg.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(len: usize) -> (usize, Vec<u8>) {
        let mut buf = vec![0x55u8; len];
        // SAFETY: `buf` is writable for `len` bytes.
        let n = unsafe { vmig_last_error(buf.as_mut_ptr().cast(), len) };
        (n, buf)
    }

    #[test]
    fn none_then_message_truncated_and_per_thread() {
        std::thread::spawn(|| {
            let (n, buf) = read(4);
            assert_eq!((n, buf[0]), (0, 0), "empty string when no call failed");
            // SAFETY: NULL asks for the length only.
            assert_eq!(unsafe { vmig_last_error(std::ptr::null_mut(), 99) }, 0);
            record(Error::InvalidArgument("ring is NULL"));
            let full = "invalid argument: ring is NULL";
            let (n, buf) = read(64);
            assert_eq!(n, full.len());
            assert_eq!(&buf[..=n], format!("{full}\0").as_bytes());
            let (n, buf) = read(8);
            assert_eq!(n, full.len());
            assert_eq!(&buf, b"invalid\0", "truncated to len - 1 bytes and NUL");
            let (n, buf) = read(0);
            assert!(n == full.len() && buf.is_empty());
            // Another thread's failure does not touch this thread's message.
            std::thread::spawn(|| record(Error::Full)).join().unwrap();
            assert_eq!(message().as_deref(), Some(full));
        })
        .join()
        .unwrap();
    }
}
