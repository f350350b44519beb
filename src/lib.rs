//! vmig: lockless building blocks for fast, predictable VM live migration.
//!
//! Engines, each usable from Rust directly and from C through `include/vmig.h`:
//!
//! * [`ring`]: a bounded lockless pointer ring (SPSC or MPSC), the hand-off
//!   the pools are built on (measurements: docs/ring.md).
//! * [`reaper`]: the adaptive KVM dirty-ring reaper interval, so vCPUs stop
//!   taking ring-full exits behind QEMU's fixed 1 s sleep
//!   (docs/controllers.md).
//! * [`pool`]: compression and decompression pools on that ring, wire
//!   compatible with QEMU's compressed pages, without QEMU's per-page locks
//!   and wake-ups (docs/pool.md).
//! * [`throttle`]: the accurate per-vCPU auto-converge throttle, a closed
//!   loop where QEMU's VM-wide timer loses what it oversleeps
//!   (docs/controllers.md).
//! * [`postcopy`]: postcopy on userfaultfd: fault service, exactly-once
//!   page placement, urgent-page queue and sent map, request latency.
//! * [`dirty`]: the dirty-page scheduler (a queue of marked pages and a
//!   background cursor, no bitmap scan).
//! * `kvm` (feature `kvm`): KVM dirty-ring harvesting for kvm-ioctls VMMs.
//!
//! The C ABI lives in `ffi` and follows one contract, documented there:
//! `0` or a negative errno, NULL/out-of-range arguments rejected with
//! `-EINVAL`, and no panic ever unwinding into the caller.
//!
//! ```
//! // One page through the compression pool, its stream back through the
//! // decompression pool.
//! use vmig::pool::{CompConfig, CompPool, DecompPool};
//! let page = vec![0x5au8; 4096];
//! let mut comp = CompPool::new(&CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 }).unwrap();
//! // SAFETY: `page` outlives its result, collected below.
//! unsafe { comp.submit(page.as_ptr(), 0, 0, true) }.unwrap();
//! let r = comp.wait_result().unwrap();
//! let mut dest = vec![0u8; 4096];
//! let mut decomp = DecompPool::new(1, 4096).unwrap();
//! // SAFETY: nothing else touches `dest` until `wait` returns.
//! unsafe { decomp.submit(r.data(), dest.as_mut_ptr()) }.unwrap();
//! decomp.wait().unwrap();
//! comp.release(r);
//! assert_eq!(dest, page);
//! ```
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(missing_docs, missing_debug_implementations)]

// Only `ffi` is exported to C: every other module carries `cbindgen:ignore`
// so its Rust-side constants and types stay out of include/vmig.h.

/// cbindgen:ignore
pub mod dirty;
/// cbindgen:ignore
pub mod error;
pub mod ffi;
/// cbindgen:ignore
pub mod guest_mem;
/// cbindgen:ignore
#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
pub mod kvm;
/// cbindgen:ignore
pub mod pool;
/// cbindgen:ignore
pub mod postcopy;
/// cbindgen:ignore
pub mod reaper;
/// cbindgen:ignore
pub mod ring;
/// cbindgen:ignore
pub mod throttle;
/// cbindgen:ignore
mod sync;

pub use error::{Error, Result};
