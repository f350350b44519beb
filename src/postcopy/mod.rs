//! Postcopy live migration with urgent pages.
//!
//! After the switch the guest runs on the destination while its memory is
//! still arriving; a vCPU touching a page that has not arrived blocks until
//! the source sends it. QEMU's designs (the preempt-full series in
//! `shared/seeds/postcopy-preempt-full.txt`): *vanilla* queues requested
//! pages into the one migration stream, *preempt* (QEMU 7.1) sends them on a
//! second connection but still from the migration thread, *preempt-full*
//! (QEMU 8.0) has the return-path thread that received the request send the
//! page itself. This module is the part every mode shares:
//!
//! * [`dest::PostcopyDest`]: guest RAM registered with userfaultfd
//!   ([`uffd`], missing mode), the fault service turning faults into page
//!   requests (a page several threads wait for is requested once), atomic
//!   placement with `UFFDIO_COPY`, the received map (a page that arrives
//!   both as an answer and from the background stream is placed once) and
//!   the request-to-placement latency histogram ([`latency`]).
//! * [`source`]: the urgent-request queue (a vmig ring) and the sent map, so
//!   the background stream skips pages already sent.
//!
//! How the modes use them, and how to read the histograms: docs/postcopy.md.

pub mod dest;
pub mod latency;
pub mod pagemap;
pub mod source;
pub mod uffd;

pub use dest::{DestCounters, Placement, PostcopyDest};
pub use latency::{LatencyHistogram, LatencySummary};
pub use pagemap::PageMap;
pub use source::{urgent_queue, SentMap, UrgentReceiver, UrgentSender};
