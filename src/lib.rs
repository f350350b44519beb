//! vmig: lockless building blocks for fast, predictable VM live migration.
//!
//! Engines, each usable from Rust directly and from C through `include/vmig.h`:
//!
//! * [`ring`]: a bounded lockless pointer ring (SPSC or MPSC).
//! * [`reaper`]: the adaptive KVM dirty-ring reaper interval.
//! * [`pool`]: compression and decompression pools on that ring, wire
//!   compatible with QEMU's compressed pages.
//! * [`throttle`]: the accurate per-vCPU auto-converge throttle.
//! * `kvm` (feature `kvm`): KVM dirty-ring harvesting for kvm-ioctls VMMs.
//!
//! The C ABI lives in `ffi` and follows one contract, documented there:
//! `0` or a negative errno, NULL/out-of-range arguments rejected with
//! `-EINVAL`, and no panic ever unwinding into the caller.
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

// Only `ffi` is exported to C: every other module carries `cbindgen:ignore`
// so its Rust-side constants and types stay out of include/vmig.h.

/// cbindgen:ignore
pub mod error;
pub mod ffi;
/// cbindgen:ignore
#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
pub mod kvm;
/// cbindgen:ignore
pub mod pool;
/// cbindgen:ignore
pub mod reaper;
/// cbindgen:ignore
pub mod ring;
/// cbindgen:ignore
pub mod throttle;
/// cbindgen:ignore
mod sync;

pub use error::{Error, Result};
