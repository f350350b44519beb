//! Every knob of a simulated migration, with the default and why.
//!
//! The defaults make one scenario that a 2-core machine migrates in well
//! under a minute with vmig's engines and where QEMU's legacy designs visibly
//! struggle (`vmig-sim --compare`); docs/sim.md shows the measured runs.

use serde::Serialize;

/// Guest page size. x86's TARGET_PAGE_SIZE; the wire format and the pools are
/// built for one page size per migration.
pub const PAGE_SIZE: usize = 4096;

/// Which engines carry the migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stack {
    /// vmig: lockless compression pool, adaptive reaper, per-vCPU throttle.
    Vmig,
    /// QEMU 7.2's designs: the legacy compression replica (one request per
    /// thread behind mutexes), a fixed 1 s reaper, one VM-wide throttle timer.
    Legacy,
}

impl Stack {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Vmig => "vmig",
            Stack::Legacy => "legacy",
        }
    }
}

/// Which guest runs: a real KVM virtual machine or the simulated one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    /// A KVM VM running the project's guest program (sim/src/kvm/).
    Kvm,
    /// vCPU threads writing an anonymous mapping (sim/src/guest.rs).
    Sim,
}

/// Reaper interval policy (names as `vmig::reaper`'s policies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReaperPolicyKind {
    /// vmig's default policy (whatever `vmig::reaper` measured best).
    Default,
    /// QEMU today: sleep a fixed interval (1 s).
    Fixed,
    /// The 6-level table from the adaptive-reaper RFC.
    Levels,
    /// Additive increase, multiplicative decrease.
    Aimd,
    /// Predict the fill rate; pick the interval that reaches a target fill.
    Predictive,
}

/// How the migration thread learns which pages to send
/// (`--dirty-tracking`; docs/dirty.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DirtyTracking {
    /// QEMU's model: the reaper sets harvested pages in a dirty bitmap, the
    /// migration thread syncs it into its own and walks it.
    Bitmap,
    /// The reaper marks harvested pages straight into `vmig::dirty`'s
    /// scheduler; the migration thread takes pages from it (no bitmap).
    Ring,
}

impl DirtyTracking {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            DirtyTracking::Bitmap => "bitmap",
            DirtyTracking::Ring => "ring",
        }
    }
}

/// Percentages of guest pages of each kind at start (sum 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ContentMix {
    /// All-zero pages (free guest memory).
    pub zero: u32,
    /// Pages copied from ELF executables on this machine (/usr/bin).
    pub code: u32,
    /// Pages copied from text files (/usr/share/doc, /usr/include).
    pub text: u32,
    /// Pages of random bytes (encrypted or compressed data; incompressible).
    pub random: u32,
}

impl Default for ContentMix {
    /// 20% zero, 35% code, 30% text, 15% random: a guest that has been up
    /// for a while (page cache of binaries and text, some free memory, some
    /// incompressible data). QEMU's own figures in the compression seed show
    /// 4-10% zero pages for a busy 60 GB guest; a smaller guest idles more.
    fn default() -> Self {
        ContentMix { zero: 20, code: 35, text: 30, random: 15 }
    }
}

/// One simulated migration.
#[derive(Clone, Debug, Serialize)]
pub struct SimConfig {
    /// Engines used.
    pub stack: Stack,
    /// Guest RAM in bytes (a multiple of PAGE_SIZE).
    pub mem_bytes: u64,
    /// vCPU threads writing guest memory.
    pub vcpus: u32,
    /// Pages each vCPU writes per second (each write dirties one page of the
    /// working set; repeated writes to a page already dirty cost no new
    /// dirty-ring entry, as with KVM's write protection).
    pub dirty_rate: u64,
    /// Bytes of guest RAM the vCPUs write into (the hot set).
    pub working_set_bytes: u64,
    /// Migration bandwidth limit in bytes per second (QEMU max-bandwidth).
    pub bandwidth: u64,
    /// Compression threads (0 = compression off, pages sent raw).
    pub compress_threads: u32,
    /// zlib level, 0..=9 (QEMU compress-level).
    pub compress_level: u32,
    /// Decompression threads on the destination (QEMU decompress-threads).
    pub decompress_threads: u32,
    /// The vmig compression pool's deflate backend, by
    /// `vmig::pool::Backend::name`, or "default" (the pool's default; the
    /// destination inflates with the pool default, zlib-rs).
    pub comp_backend: String,
    /// Wait for a free compression thread (true) or send the page raw when
    /// all are busy (false). QEMU compress-wait-thread.
    pub compress_wait: bool,
    /// Maximum tolerated downtime in milliseconds (QEMU downtime-limit).
    pub downtime_ms: u64,
    /// Reaper interval policy; None = the stack's own (vmig default or
    /// FIXED for legacy).
    pub reaper: Option<ReaperPolicyKind>,
    /// Entries per vCPU dirty ring (QEMU -accel kvm,dirty-ring-size).
    pub dirty_ring_size: u32,
    /// Throttle auto-converge (QEMU capability auto-converge).
    pub auto_converge: bool,
    /// First throttle step, percent (QEMU cpu-throttle-initial).
    pub throttle_initial: u32,
    /// Throttle increment, percent (QEMU cpu-throttle-increment).
    pub throttle_increment: u32,
    /// Throttle ceiling, percent (QEMU max-cpu-throttle).
    pub throttle_max: u32,
    /// Seed for guest contents and the vCPUs' write pattern.
    pub seed: u64,
    /// Give up (status "cancelled") after this many seconds.
    pub max_time_s: f64,
    /// Initial guest contents.
    pub mix: ContentMix,
    /// Test-only fault injection: corrupt this page on the wire every time
    /// it is sent, so the destination must notice.
    pub fault_corrupt_page: Option<u64>,
    /// Postcopy (`--postcopy MODE`); None: precopy only.
    pub postcopy: Option<crate::postcopy::PostcopyConfig>,
    /// Dirty tracking the migration thread uses.
    pub dirty_tracking: DirtyTracking,
    /// Bytes of guest RAM that hold content at start (the first pages);
    /// the rest stays untouched zero pages, never backed by memory, like an
    /// idle large guest. None: all of RAM.
    pub populated_bytes: Option<u64>,
    /// Entries in the ring mode's queue; None: derived (`dirty_queue_capacity`).
    pub dirty_queue: Option<u32>,
    /// Ring mode: bound on the first pass's stretch, which is the background
    /// interval K (`vmig::dirty::config`, docs/dirty.md#deriving-k).
    pub first_pass_stretch: u32,
    /// Which guest runs.
    pub guest: GuestKind,
    /// The KVM device the KVM guest opens.
    pub kvm_device: String,
    /// How long the destination KVM guest runs after the switch-over, ms.
    pub dest_run_ms: u64,
    /// Test-only fault injection (KVM guest): drop every harvested
    /// dirty-ring entry of this page, so a page the guest dirtied is never
    /// resent and verification must fail.
    pub fault_unharvested_page: Option<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            stack: Stack::Vmig,
            // 1 GiB: big enough that the first pass takes seconds at
            // 1 Gbit/s (so the guest re-dirties its hot set during it), small
            // enough for two guest copies plus a --compare run in 24 GiB.
            mem_bytes: 1 << 30,
            // 2 vCPUs on a 2-core host: the guest competes with the
            // migration for CPU, as on a loaded hypervisor.
            vcpus: 2,
            // 20000 pages/s per vCPU (~80 MB/s of page writes each) over a
            // 192 MiB hot set: faster than the link drains it, so the run
            // only converges with auto-converge's help, as in the seed's
            // "threads repeatedly writing the memory" workload. Measured
            // (docs/sim.md, load 9-12): vmig converged in 15-21 s with a
            // 20-50% throttle, the legacy stack in 24-26 s with 60%.
            dirty_rate: 20_000,
            working_set_bytes: 192 << 20,
            // 1 Gbit/s: a typical dedicated migration link.
            bandwidth: 1_000_000_000 / 8,
            // 2 threads: one per core of this machine (the seed used 8/16
            // on 64 cores).
            compress_threads: 2,
            // Level 1: QEMU's default compress-level and the fastest zlib.
            compress_level: 1,
            // 2: QEMU's default decompress-threads.
            decompress_threads: 2,
            comp_backend: "default".into(),
            // QEMU's default compress-wait-thread is on.
            compress_wait: true,
            // 300 ms: QEMU's default downtime-limit.
            downtime_ms: 300,
            reaper: None,
            // 4096: the dirty-ring-size QEMU's documentation suggests.
            dirty_ring_size: 4096,
            auto_converge: true,
            // QEMU's defaults: cpu-throttle-initial 20, increment 10, max 99.
            throttle_initial: 20,
            throttle_increment: 10,
            throttle_max: 99,
            seed: 1,
            // 50 s: a default run ends within a minute even if it never
            // converges.
            max_time_s: 50.0,
            mix: ContentMix::default(),
            fault_corrupt_page: None,
            postcopy: None,
            dirty_tracking: DirtyTracking::Bitmap,
            populated_bytes: None,
            dirty_queue: None,
            // vmig's derived default (1): the first pass takes no longer than
            // an undisturbed pass, whatever pages cost (docs/dirty.md#deriving-k).
            first_pass_stretch: vmig::dirty::DEFAULT_FIRST_PASS_STRETCH,
            // The library default is the simulated guest (runs anywhere);
            // the CLI's `--guest auto` picks KVM where /dev/kvm works.
            guest: GuestKind::Sim,
            kvm_device: "/dev/kvm".into(),
            // 1 s: long enough for the guest's self-check (a few ms) and
            // thousands of records per vCPU at the default rate.
            dest_run_ms: 1000,
            fault_unharvested_page: None,
        }
    }
}

impl SimConfig {
    /// Guest pages.
    pub fn nr_pages(&self) -> u64 {
        self.mem_bytes / PAGE_SIZE as u64
    }

    /// Pages of the working set.
    pub fn working_set_pages(&self) -> u64 {
        self.working_set_bytes / PAGE_SIZE as u64
    }

    /// Pages that hold content at start (`--populated`).
    pub fn populated_pages(&self) -> u64 {
        self.populated_bytes.map_or(self.nr_pages(), |b| b / PAGE_SIZE as u64)
    }

    /// Ring mode's queue capacity: given, or the smallest power of two that
    /// holds one whole harvest (`vcpus x dirty_ring_size`): a reap then
    /// overflows only when the migration thread is a full harvest behind.
    pub fn dirty_queue_capacity(&self) -> u32 {
        self.dirty_queue.unwrap_or_else(|| {
            let harvest = u64::from(self.vcpus) * u64::from(self.dirty_ring_size);
            harvest.next_power_of_two().min(1 << 30) as u32
        })
    }

    /// The reaper policy this run uses.
    pub fn reaper_policy(&self) -> ReaperPolicyKind {
        self.reaper.unwrap_or(match self.stack {
            Stack::Vmig => ReaperPolicyKind::Default,
            Stack::Legacy => ReaperPolicyKind::Fixed,
        })
    }

    /// Checks every knob; the message names the offending option.
    pub fn validate(&self) -> Result<(), String> {
        let page = PAGE_SIZE as u64;
        if self.mem_bytes < 16 * page || self.mem_bytes % page != 0 {
            return Err(format!("--mem must be a multiple of {page} bytes and at least 16 pages"));
        }
        if self.mem_bytes > 64 << 30 {
            return Err("--mem above 64 GiB does not fit two guest copies on this machine".into());
        }
        if self.vcpus == 0 || self.vcpus > 256 {
            return Err("--vcpus must be in 1..=256".into());
        }
        if self.working_set_bytes < page || self.working_set_bytes > self.mem_bytes {
            return Err("--working-set must be at least one page and at most --mem".into());
        }
        if self.bandwidth < 1_000_000 / 8 {
            return Err("--bandwidth must be at least 1 Mbit/s".into());
        }
        if self.compress_threads > 64 || self.decompress_threads == 0 || self.decompress_threads > 64 {
            return Err("--compress-threads must be in 0..=64 and --decompress-threads in 1..=64".into());
        }
        if self.compress_level > 9 {
            return Err("--compress-level must be in 0..=9".into());
        }
        if self.downtime_ms == 0 || self.downtime_ms > 2_000_000 {
            return Err("--downtime-limit must be in 1..=2000000 ms (QEMU's range)".into());
        }
        if !self.dirty_ring_size.is_power_of_two() || !(1024..=65536).contains(&self.dirty_ring_size) {
            return Err("--dirty-ring-size must be a power of two in 1024..=65536 (QEMU's range)".into());
        }
        if !(1..=99).contains(&self.throttle_initial) || !(1..=99).contains(&self.throttle_max) {
            return Err("--throttle-initial and --throttle-max must be in 1..=99".into());
        }
        if !(1..=100).contains(&self.throttle_increment) {
            return Err("--throttle-increment must be in 1..=100".into());
        }
        if !(self.max_time_s > 0.0 && self.max_time_s <= 3600.0) {
            return Err("--max-time must be in (0, 3600] seconds".into());
        }
        let m = self.mix;
        if m.zero + m.code + m.text + m.random != 100 {
            return Err("--mix percentages must add up to 100".into());
        }
        if let Some(pc) = &self.postcopy {
            // The postcopy run has its own precopy rounds on the bitmap model
            // and maps all of guest RAM itself (sim/src/postcopy/).
            if self.dirty_tracking != DirtyTracking::Bitmap {
                return Err("--postcopy does not combine with --dirty-tracking ring: its precopy rounds use the bitmap model".into());
            }
            if self.populated_bytes.is_some() {
                return Err("--postcopy does not combine with --populated".into());
            }
            // QEMU's migrate_caps_check refuses compress with postcopy-ram
            // ("Postcopy is not currently compatible with compression") and
            // again with postcopy-preempt: a page must be placed whole by
            // UFFDIO_COPY, not written by a decompression thread.
            if self.compress_threads > 0 {
                return Err("--postcopy does not support compression (QEMU refuses compress with postcopy-ram and with postcopy-preempt): use --compress-threads 0".into());
            }
            if self.fault_corrupt_page.is_some() {
                return Err("--fault-corrupt-page is a precopy test and does not combine with --postcopy".into());
            }
            if u64::from(self.vcpus) > crate::postcopy::vcpu::SLOTS {
                return Err(format!("--postcopy supports at most {} vCPUs (one 64-byte slot class each)", crate::postcopy::vcpu::SLOTS));
            }
            if pc.after > 100 {
                return Err("--postcopy-after must be in 0..=100 precopy rounds".into());
            }
            if !(1..=10_000).contains(&pc.nic_queue_us) {
                return Err("--nic-queue-us must be in 1..=10000".into());
            }
            if pc.sndbuf.is_some_and(|b| !(64 << 10..=1 << 30).contains(&b)) {
                return Err("--sndbuf must be in 64K..=1G".into());
            }
        }
        if let Some(b) = self.populated_bytes {
            if b % page != 0 || b < self.working_set_bytes || b > self.mem_bytes {
                return Err(format!(
                    "--populated must be a multiple of {page} bytes, at least --working-set and at most --mem"
                ));
            }
        }
        if let Some(q) = self.dirty_queue {
            if !q.is_power_of_two() || !(2..=1 << 30).contains(&q) {
                return Err("--dirty-queue must be a power of two in 2..=2^30".into());
            }
        }
        if !(1..=1 << 20).contains(&self.first_pass_stretch) {
            return Err("--first-pass-stretch must be in 1..=1048576".into());
        }
        if self.dirty_tracking == DirtyTracking::Ring && self.stack == Stack::Legacy {
            return Err("--dirty-tracking ring needs --stack vmig: QEMU 7.2's compression threads \
                        flush per bitmap round, and the ring mode has no rounds"
                .into());
        }
        if self.dest_run_ms > 600_000 {
            return Err("--dest-run must be at most 600000 ms".into());
        }
        if let Some(p) = self.fault_unharvested_page {
            if p >= self.nr_pages() {
                return Err("--fault-unharvested-page must be a page of guest RAM".into());
            }
        }
        if let Some(p) = self.fault_corrupt_page {
            if p >= self.nr_pages() {
                return Err("--fault-corrupt-page must be a page of guest RAM".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        SimConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_bad_knobs() {
        let bad = [
            SimConfig { mem_bytes: 4097, ..Default::default() },
            SimConfig { vcpus: 0, ..Default::default() },
            SimConfig { working_set_bytes: 2 << 30, ..Default::default() },
            SimConfig { compress_level: 10, ..Default::default() },
            SimConfig { dirty_ring_size: 3000, ..Default::default() },
            SimConfig { throttle_max: 100, ..Default::default() },
            SimConfig { max_time_s: 0.0, ..Default::default() },
            SimConfig { mix: ContentMix { zero: 50, code: 50, text: 50, random: 0 }, ..Default::default() },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
