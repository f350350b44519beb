//! The source of a postcopy migration: `after` precopy rounds, the switch
//! (vCPUs stopped, discard bitmap and vCPU state sent), then the postcopy
//! phase: the background stream sends every page not yet sent while page
//! requests from the return path are served as the mode says.
//!
//! * vanilla: the return-path thread queues the request
//!   ([`vmig::postcopy::urgent_queue`]); the migration thread takes it
//!   before its next background page and puts the page into the bulk
//!   stream, behind the bytes queued there.
//! * preempt: as vanilla, but the migration thread sends the page on the
//!   preempt connection; it notices the request only between its own
//!   writes, which block while the bulk queue is full.
//! * preempt-full: the return-path thread sends the page on the preempt
//!   connection itself.
//!
//! Every sender claims the page in the [`SentMap`]: the background stream
//! skips a page claimed before (sent as an answer, or present since
//! precopy). An answer is sent even when the background stream already
//! queued the page, since that copy may wait behind the whole send queue;
//! the destination's received map drops whichever copy comes second.

use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmig::postcopy::{urgent_queue, SentMap, UrgentSender};

use super::config::{PostcopyConfig, PostcopyMode};
use super::netlink::{DirectConn, QueuedConn, Wire};
use super::proto;
use crate::bitmap::PageBitmap;
use crate::config::{SimConfig, PAGE_SIZE};
use crate::guest::Guest;
use crate::memory::GuestRam;
use crate::source::{Progress, SourceStats, Status};
use crate::wire;

/// QEMU's IO_BUF_SIZE: the migration thread hands the bulk socket 32 KiB at
/// a time, and a preempt-mode request waits for the current hand-over.
const IO_BUF: usize = 32 << 10;
/// Urgent-queue slots: far more than requests in flight (each vCPU waits on
/// one page at a time).
const URGENT_QUEUE: u32 = 1024;

/// Postcopy counters of the source.
#[derive(Debug, Default, Clone)]
pub struct SourcePostcopy {
    /// Requests received on the return path.
    pub requests: u64,
    /// Requested pages sent ahead of the background stream.
    pub urgent_sent: u64,
    /// Requests for pages the background stream had already queued
    /// (answered anyway; one copy is dropped at the destination).
    pub requests_already_sent: u64,
    /// Pages the background stream sent after the switch.
    pub background_sent: u64,
    /// Pages to move after the switch.
    pub postcopy_pages: u64,
    /// Bulk-stream rate after the switch, Mbit/s.
    pub bulk_mbps: f64,
    /// Time from the switch until the destination had every page, ms.
    pub postcopy_ms: f64,
    /// Time the guest was stopped at the switch (stop, sync, switch record), ms.
    pub switch_ms: f64,
}

struct Bulk {
    conn: QueuedConn,
    buf: Vec<u8>,
    bytes: u64,
}

impl Bulk {
    fn put<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> io::Result<R> {
        let before = self.buf.len();
        let r = f(&mut self.buf);
        self.bytes += (self.buf.len() - before) as u64;
        if self.buf.len() >= IO_BUF {
            self.flush()?;
        }
        Ok(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.buf, Vec::with_capacity(IO_BUF + PAGE_SIZE + 16));
        self.conn.send(b)
    }
}

/// Appends page `p` as a record: zero or raw. Returns whether it was zero.
fn put_page(out: &mut Vec<u8>, ram: &GuestRam, p: u64, page: &mut [u8; PAGE_SIZE]) -> bool {
    ram.read_page(p, page);
    if crate::memory::is_zero(&page[..]) {
        wire::put_zero(out, p, 0);
        true
    } else {
        wire::put_page(out, p, &page[..]);
        false
    }
}

/// Everything the migration needs.
pub struct PcSource<'a> {
    /// Run configuration.
    pub cfg: &'a SimConfig,
    /// Postcopy knobs.
    pub pc: &'a PostcopyConfig,
    /// Source RAM.
    pub ram: &'a GuestRam,
    /// The link.
    pub wire: Arc<Wire>,
}

impl PcSource<'_> {
    /// Runs the migration over `main` (and `preempt`) to its end.
    pub fn run(
        &self,
        guest: &mut Guest,
        main: TcpStream,
        preempt: Option<TcpStream>,
        progress: &mut dyn FnMut(&Progress),
    ) -> (Status, SourceStats, SourcePostcopy) {
        let t0 = Instant::now();
        let mut st = SourceStats::default();
        let mut pcs = SourcePostcopy::default();
        let status = match self.migrate(t0, guest, main, preempt, progress, &mut st, &mut pcs) {
            Ok(s) => s,
            Err(e) => Status::Failed(format!(
                "connection broken during postcopy: {e}; the guest cannot resume on either side (postcopy cannot roll back)"
            )),
        };
        st.total_ms = t0.elapsed().as_secs_f64() * 1000.0;
        (status, st, pcs)
    }

    #[allow(clippy::too_many_arguments)]
    fn migrate(
        &self,
        t0: Instant,
        guest: &mut Guest,
        main: TcpStream,
        preempt: Option<TcpStream>,
        progress: &mut dyn FnMut(&Progress),
        st: &mut SourceStats,
        pcs: &mut SourcePostcopy,
    ) -> io::Result<Status> {
        let pages = self.ram.pages();
        let mut ret = main.try_clone()?;
        let main_shut = main.try_clone()?;
        let preempt_shut = preempt.as_ref().map(|s| s.try_clone()).transpose()?;
        let mut bulk = Bulk {
            conn: QueuedConn::new(main, self.wire.clone(), self.pc.sndbuf_bytes() as usize)?,
            buf: Vec::with_capacity(IO_BUF + PAGE_SIZE + 16),
            bytes: 0,
        };
        let mut page = Box::new([0u8; PAGE_SIZE]);
        let shared = guest.shared.clone();
        shared.log.start();
        let mut bmap = PageBitmap::new(pages);
        bmap.set_all();
        bulk.put(|b| wire::put_header(b, pages))?;
        st.setup_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let mut last = Instant::now();
        let report = |phase: &'static str, remaining: u64, bytes: u64, syncs: u64, p: &mut dyn FnMut(&Progress)| {
            p(&Progress {
                elapsed_s: t0.elapsed().as_secs_f64(),
                phase,
                remaining: remaining * PAGE_SIZE as u64,
                transferred: bytes,
                dirty_sync_count: syncs,
                throttle_pct: 0,
                mbps: 0.0,
            })
        };
        // Precopy rounds.
        for round in 0..self.pc.after {
            if round > 0 {
                shared.log.sync_into(&mut bmap);
                st.dirty_sync_count += 1;
            }
            let mut cursor = 0;
            while let Some(p) = bmap.take_next(cursor) {
                cursor = p + 1;
                if bulk.put(|b| put_page(b, self.ram, p, &mut page))? {
                    st.zero_pages += 1;
                } else {
                    st.normal_pages += 1;
                }
                if last.elapsed() >= Duration::from_millis(100) {
                    last = Instant::now();
                    report("active", bmap.count(), bulk.bytes, st.dirty_sync_count, progress);
                }
            }
            bulk.put(wire::put_eos)?;
            st.rounds += 1;
        }
        // The switch: stop the guest, last sync, discard bitmap and vCPU
        // state, and the destination's guest starts.
        let down = Instant::now();
        report("device", bmap.count(), bulk.bytes, st.dirty_sync_count, progress);
        guest.stop_vcpus();
        guest.stop_reaper();
        let stopped = Instant::now();
        shared.log.sync_into(&mut bmap);
        st.dirty_sync_count += 1;
        let sent = Arc::new(SentMap::new(pages));
        let mut discard = vec![0u64; pages.div_ceil(64) as usize];
        for p in 0..pages {
            if bmap.test(p) {
                discard[(p / 64) as usize] |= 1 << (p % 64);
            } else {
                sent.claim(p);
            }
        }
        pcs.postcopy_pages = bmap.count();
        // Relaxed: the vCPUs have been joined.
        let writes = shared.writes.load(std::sync::atomic::Ordering::Relaxed);
        bulk.put(|b| proto::put_switch(b, self.cfg.vcpus, writes, &discard))?;
        bulk.flush()?;
        let t_switch = Instant::now();
        pcs.switch_ms = (t_switch - down).as_secs_f64() * 1000.0;
        // The precopy report's downtime fields: stopped until the switch
        // record is queued (the destination's guest starts on receipt).
        st.downtime_ms = pcs.switch_ms;
        st.downtime_stop_ms = (stopped - down).as_secs_f64() * 1000.0;
        st.downtime_send_ms = (t_switch - stopped).as_secs_f64() * 1000.0;
        let bulk_at_switch = bulk.bytes;

        let mode = self.pc.mode;
        let (urgent_tx, urgent_rx) = urgent_queue(URGENT_QUEUE).map_err(|e| io::Error::other(e.to_string()))?;
        let mut preempt_conn = preempt.map(|s| DirectConn::new(s, self.wire.clone())).transpose()?;
        let (done_tx, done_rx) = mpsc::channel::<Result<(), String>>();
        let ram = self.ram;
        let outcome = std::thread::scope(|s| -> io::Result<Status> {
            let rp_conn = if mode == PostcopyMode::PreemptFull { preempt_conn.take() } else { None };
            let sent2 = sent.clone();
            let rp = std::thread::Builder::new().name("return-path".into()).spawn_scoped(s, move || {
                super::netlink::request_path_thread();
                return_path(&mut ret, mode, &urgent_tx, &sent2, ram, rp_conn, &done_tx)
            })?;
            let mut cursor = 0u64;
            let mut since_break = 0u64;
            let mut urgent_sent = 0u64;
            let mut bg = 0u64;
            let res = (|| -> io::Result<()> {
                loop {
                    // Urgent requests first (vanilla and preempt).
                    while let Some(p) = urgent_rx.next() {
                        // An answer goes out even if the background stream
                        // already queued the page (it may sit behind the
                        // whole send queue); the destination places the
                        // first copy and drops the other.
                        sent.claim(p);
                        urgent_sent += 1;
                        match preempt_conn.as_mut() {
                            Some(c) => {
                                let mut rec = Vec::with_capacity(PAGE_SIZE + 16);
                                put_page(&mut rec, ram, p, &mut page);
                                c.send(&rec)?;
                            }
                            None => {
                                bulk.put(|b| put_page(b, ram, p, &mut page))?;
                                bulk.flush()?;
                            }
                        }
                    }
                    let Some(p) = sent.next_unsent(cursor) else { break };
                    cursor = p + 1;
                    if sent.claim(p) {
                        bulk.put(|b| put_page(b, ram, p, &mut page))?;
                        bg += 1;
                        since_break += 1;
                        if self.pc.fault_break_after.is_some_and(|n| since_break >= n) {
                            // Test only: the network breaks mid-postcopy.
                            bulk.conn.shutdown();
                            let _ = main_shut.shutdown(Shutdown::Both);
                            if let Some(p) = &preempt_shut {
                                let _ = p.shutdown(Shutdown::Both);
                            }
                        }
                    }
                    if last.elapsed() >= Duration::from_millis(100) {
                        last = Instant::now();
                        report("postcopy", pages - sent.count(), bulk.bytes, st.dirty_sync_count, progress);
                    }
                }
                bulk.put(wire::put_end)?;
                bulk.flush()?;
                bulk.conn.finish()
            })();
            let bulk_done = Instant::now();
            pcs.background_sent = bg;
            pcs.bulk_mbps =
                (bulk.bytes - bulk_at_switch) as f64 * 8.0 / (bulk_done - t_switch).as_secs_f64().max(1e-9) / 1e6;
            let status = match res {
                Err(e) => {
                    // Unblock the return path.
                    let _ = main_shut.shutdown(Shutdown::Both);
                    Err(e)
                }
                Ok(()) => match done_rx.recv_timeout(Duration::from_secs_f64(self.cfg.max_time_s)) {
                    Ok(Ok(())) => {
                        pcs.postcopy_ms = t_switch.elapsed().as_secs_f64() * 1000.0;
                        Ok(Status::Completed)
                    }
                    Ok(Err(e)) => Err(io::Error::other(e)),
                    Err(_) => {
                        let _ = main_shut.shutdown(Shutdown::Both);
                        Err(io::Error::other("destination never reported every page placed"))
                    }
                },
            };
            if let Some(p) = &preempt_shut {
                let _ = p.shutdown(Shutdown::Both);
            }
            let rp_stats = rp.join().map_err(|_| io::Error::other("return-path thread panicked"))?;
            pcs.requests = rp_stats.0;
            pcs.urgent_sent = urgent_sent + rp_stats.1;
            pcs.requests_already_sent = rp_stats.2;
            status
        });
        st.transferred = bulk.bytes;
        st.remaining = (pages - sent.count()) * PAGE_SIZE as u64;
        outcome
    }
}

/// The return-path thread: reads requests until the destination reports
/// completion or the connection ends. Returns (requests, pages it sent
/// itself, requests for pages already sent).
fn return_path(
    ret: &mut TcpStream,
    mode: PostcopyMode,
    urgent: &UrgentSender,
    sent: &SentMap,
    ram: &GuestRam,
    mut conn: Option<DirectConn>,
    done: &mpsc::Sender<Result<(), String>>,
) -> (u64, u64, u64) {
    let (mut requests, mut sent_here, mut already) = (0u64, 0u64, 0u64);
    let mut page = Box::new([0u8; PAGE_SIZE]);
    let mut rec = Vec::with_capacity(PAGE_SIZE + 16);
    let mut w = [0u8; 8];
    let outcome = loop {
        if let Err(e) = ret.read_exact(&mut w) {
            break Err(format!("return path: {e}"));
        }
        let p = u64::from_be_bytes(w);
        if p == proto::COMPLETE {
            break Ok(());
        }
        if p >= ram.pages() {
            break Err(format!("return path: request for page {p} beyond guest RAM"));
        }
        requests += 1;
        // Claimed before: the background stream queued it (answered anyway,
        // see the migration thread's loop).
        if !sent.claim(p) {
            already += 1;
        }
        match (mode, conn.as_mut()) {
            (PostcopyMode::PreemptFull, Some(c)) => {
                rec.clear();
                put_page(&mut rec, ram, p, &mut page);
                if let Err(e) = c.send(&rec) {
                    break Err(format!("preempt connection: {e}"));
                }
                sent_here += 1;
            }
            _ => {
                // Full only if 1024 requests are outstanding; the migration
                // thread drains it between pages (and unclaimed pages are
                // only sent after the queue is empty, so it never stops
                // draining while pages remain).
                while urgent.request(p).is_err() {
                    std::thread::yield_now();
                }
            }
        }
    };
    if let Some(c) = &conn {
        c.shutdown();
    }
    let _ = done.send(outcome);
    (requests, sent_here, already)
}
