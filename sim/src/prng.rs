//! The simulator's seeded PRNG: the one SplitMix64 that vmig's benchmarks
//! and tests share, from the vmig-legacy crate (`legacy/src/prng.rs`).

pub use vmig_legacy::prng::SplitMix64;
