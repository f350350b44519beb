//! What the VMM tells the controller at each reap.

/// One reap, as reported through `update`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Entries found in the fullest ring at this reap. A ring-full exit is
    /// per vCPU, so the fullest ring, not the sum, predicts the next one.
    pub max_ring_fill: u64,
    /// Entries reaped from all rings at this reap.
    pub total_reaped: u64,
    /// Ring-full exits since the previous update (a delta).
    pub ring_full_events: u64,
    /// Microseconds since the previous update (the interval actually slept,
    /// shorter than planned after a kick). Supplied by the edge's clock.
    pub elapsed_us: u64,
}

/// `part / whole` as a fraction, saturating, with `whole == 0` read as 1 so
/// no caller divides by zero (validated configs never pass 0).
pub(crate) fn ratio(part: u64, whole: u64) -> f64 {
    part as f64 / whole.max(1) as f64
}
