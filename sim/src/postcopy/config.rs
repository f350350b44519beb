//! Postcopy knobs (`--postcopy MODE` and friends), with their defaults and why.

use serde::Serialize;

/// How requested pages reach the destination (QEMU's three designs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostcopyMode {
    /// One stream: the migration thread puts requested pages into the bulk
    /// stream, behind everything already queued in it (QEMU ≤ 7.0).
    Vanilla,
    /// A second connection for urgent pages, still sent by the migration
    /// thread between bulk pages (QEMU 7.1, `postcopy-preempt`).
    Preempt,
    /// The return-path thread that receives a request sends the page itself
    /// on the preempt connection (QEMU 8.0's rework of preempt).
    PreemptFull,
}

impl PostcopyMode {
    /// Name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PostcopyMode::Vanilla => "vanilla",
            PostcopyMode::Preempt => "preempt",
            PostcopyMode::PreemptFull => "preempt-full",
        }
    }

    /// Whether urgent pages travel on their own connection.
    pub fn has_preempt_channel(self) -> bool {
        self != PostcopyMode::Vanilla
    }
}

/// What the destination's vCPUs touch after the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Random pages of the working set (the seed's "fully random writes").
    Random,
    /// Each vCPU walks its share of the working set page by page.
    Sequential,
}

/// One postcopy migration's knobs.
#[derive(Clone, Debug, Serialize)]
pub struct PostcopyConfig {
    /// How urgent pages travel.
    pub mode: PostcopyMode,
    /// Precopy rounds over guest RAM before the switch.
    pub after: u32,
    /// The destination guest's access pattern.
    pub access: Access,
    /// Bytes the bulk connection's send queue holds (the socket buffer a
    /// vanilla request waits behind); None: this machine's TCP autotuning
    /// ceiling, `net.ipv4.tcp_wmem` max (a saturated bulk flow grows its
    /// buffer to it).
    pub sndbuf: Option<u64>,
    /// Microseconds of bulk data the NIC holds ahead of any packet (its
    /// device queue, which byte queue limits keep to tens of µs): the most an
    /// urgent page on its own connection waits behind the bulk stream.
    pub nic_queue_us: u64,
    /// Run the latency-path threads SCHED_FIFO (`--rt-threads`), see
    /// `netlink::precise_timers`.
    pub rt_threads: bool,
    /// Test only: break both connections after this many postcopy pages.
    pub fault_break_after: Option<u64>,
}

impl PostcopyConfig {
    /// Defaults for `mode`.
    pub fn new(mode: PostcopyMode) -> PostcopyConfig {
        PostcopyConfig {
            mode,
            // One full pass, then switch: the pages the guest rewrote during
            // the pass (its whole hot set at the default rates) are what
            // postcopy moves, and what the guest faults on.
            after: 1,
            access: Access::Random,
            sndbuf: None,
            // 50 µs: 6 KB at 1 Gbit/s, 62 KB at 10 Gbit/s, the order of a
            // BQL-limited NIC queue; docs/postcopy.md ("Link model").
            nic_queue_us: 50,
            rt_threads: false,
            fault_break_after: None,
        }
    }

    /// The send-queue size this run uses.
    pub fn sndbuf_bytes(&self) -> u64 {
        self.sndbuf.unwrap_or_else(tcp_wmem_max)
    }
}

/// `net.ipv4.tcp_wmem`'s maximum (Linux's default is 4 MiB).
pub fn tcp_wmem_max() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .unwrap_or(4 << 20)
}
