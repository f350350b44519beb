//! Synchronisation primitives, switched between `std` and `loom`.
//!
//! Every lockless hand-off in vmig imports its atomics from here, so the loom
//! models (`RUSTFLAGS="--cfg vmig_loom" cargo test --release --test loom_*`) check
//! the real code rather than a copy (crossbeam's `primitive` module does the same).

#[cfg(vmig_loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(vmig_loom)]
#[allow(unused_imports)]
pub(crate) use loom::{hint::spin_loop, thread::yield_now};

#[cfg(not(vmig_loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(vmig_loom))]
#[allow(unused_imports)]
pub(crate) use std::{hint::spin_loop, thread::yield_now};
