//! `vmig_version()`.

use std::ffi::c_char;

/// NUL-terminated crate version, from Cargo.toml at build time.
static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library version as a static NUL-terminated string, e.g. "0.1.0".
/// It equals the VMIG_VERSION macro of the header the program was built
/// with, unless the program runs against a different libvmig.
///
/// Thread-safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn vmig_version() -> *const c_char {
    VERSION.as_ptr().cast()
}
