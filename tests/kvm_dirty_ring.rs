//! Runs the unit tests of the simulated KVM dirty ring that the reaper
//! benchmark and vmig-sim share (benches/support/kvm_dirty_ring.rs).

#[path = "../benches/support/kvm_dirty_ring.rs"]
mod kvm_dirty_ring;
