//! vmig-legacy: the baselines vmig is measured against, shared by vmig's
//! benchmarks (`benches/`) and by `vmig-sim --compare`. Never published and
//! never linked into libvmig.so.
//!
//! * [`compress`]: a replica of QEMU 7.2's compression threads.
//! * [`throttle`]: a replica of QEMU 7.2's VM-wide auto-converge throttle.
//! * [`engine`]: one trait over vmig's compression pool and the legacy
//!   replica, so a benchmark or the simulator drives both with one loop.
//! * [`kvm_dirty_ring`]: a simulated per-vCPU KVM dirty ring on vmig's ring.
//! * [`prng`]: the one seeded PRNG of the benchmarks, tests and simulator.
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(missing_docs, missing_debug_implementations)]

pub mod compress;
pub mod engine;
pub mod kvm_dirty_ring;
pub mod prng;
pub mod throttle;

pub use compress::{LegacyComp, LegacyResult};
pub use engine::{CompressEngine, CompressedPage};
pub use prng::SplitMix64;
