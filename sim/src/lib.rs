//! vmig-sim: a whole precopy live migration in one process.
//!
//! A simulated guest (RAM in an anonymous mapping, vCPU threads writing it,
//! dirty pages logged through per-vCPU KVM-style dirty rings and harvested by
//! a reaper thread) is migrated by a QEMU-style migration thread over a
//! rate-limited loopback TCP connection to a destination thread, with
//! compression, auto-converge and switch-over, and the destination's RAM is
//! then compared with the source's byte for byte. The engines are vmig's or
//! replicas of QEMU 7.2's legacy designs ([`config::Stack`]).
//!
//! The same migration runs a real KVM virtual machine instead (`kvm`,
//! `--guest kvm`; docs/kvm.md): the project's guest program, dirty pages
//! from KVM's own rings through `vmig::kvm`.
//!
//! See docs/sim.md for the scenario, the wire format and sample reports.
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod bitmap;
pub mod config;
pub mod content;
pub mod converge;
pub mod dest;
pub mod dirty;
pub mod engines;
pub mod guest;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod kvm;
pub mod legacy_engines;
pub mod link;
pub mod memory;
pub mod postcopy;
pub mod prng;
pub mod report;
pub mod ring_tracking;
pub mod run;
pub mod running;
pub mod source;
pub mod stacks;
pub mod vmig_engines;
pub mod wire;

/// The simulated KVM dirty ring shared with vmig's reaper benchmark.
pub use vmig_legacy::kvm_dirty_ring;

pub use config::SimConfig;
pub use report::Report;
pub use run::run;
