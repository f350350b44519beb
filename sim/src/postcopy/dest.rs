//! The destination of a postcopy migration: precopy pages are written
//! straight into RAM; at the switch the discarded pages are dropped, RAM is
//! registered with userfaultfd ([`vmig::postcopy::PostcopyDest`]) and the
//! guest starts at once; faults become requests on the return path, and
//! pages from the bulk and the preempt connection are placed exactly once.
//!
//! Threads after the switch: this one (bulk stream), the fault service
//! (`vmig::postcopy`), the preempt reader (preempt modes) and the vCPUs.
//! Any error fails the engine (`PostcopyDest::fail`, which releases every
//! waiting vCPU) and shuts every socket down, so every thread ends.

use std::io::{self, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Instant;

use vmig::postcopy::{DestCounters, LatencySummary, PostcopyDest};

use super::proto::{self, PcRecord};
use super::vcpu::{self, DestGuest, DestWorkload, Write as JWrite};
use crate::config::PAGE_SIZE;
use crate::memory::GuestRam;

/// What the destination measured.
#[derive(Debug, Default)]
pub struct DestOutcome {
    /// Precopy pages applied.
    pub precopy_pages: u64,
    /// Pages discarded at the switch.
    pub discarded: u64,
    /// Time from the switch record to the last page placed, ms.
    pub postcopy_ms: f64,
    /// Engine counters.
    pub counters: DestCounters,
    /// Request-to-placement latency.
    pub latency: LatencySummary,
    /// Pages placed from the preempt connection.
    pub preempt_pages: u64,
    /// Pages placed from the bulk stream after the switch.
    pub bulk_pages: u64,
    /// vCPU writes while memory was still arriving.
    pub writes_postcopy: u64,
    /// vCPU writes in all.
    pub writes: u64,
    /// Seconds the destination guest ran before it was stopped for verification.
    pub guest_s: f64,
    /// The vCPUs' journals (for verification).
    pub journals: Vec<Vec<JWrite>>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Connections of one destination.
pub struct DestConns {
    /// The bulk stream (also the return path, in the other direction).
    pub main: TcpStream,
    /// The preempt connection, in preempt modes.
    pub preempt: Option<TcpStream>,
}

impl DestConns {
    fn shutdown(&self) {
        let _ = self.main.shutdown(Shutdown::Both);
        if let Some(p) = &self.preempt {
            let _ = p.shutdown(Shutdown::Both);
        }
    }
}

/// Serves one postcopy migration into `ram`. `w` is the guest's workload
/// (the counter base arrives in the switch record).
pub fn serve(conns: DestConns, ram: &GuestRam, mut w: DestWorkload) -> DestOutcome {
    let mut out = DestOutcome::default();
    if let Err(e) = receive(&conns, ram, &mut w, &mut out) {
        out.error.get_or_insert(e.to_string());
    }
    conns.shutdown();
    out
}

fn place(pd: &PostcopyDest, rec: &PcRecord, buf: &[u8]) -> io::Result<bool> {
    let r = match *rec {
        PcRecord::Zero { page, fill: 0 } => pd.place_zero(page),
        PcRecord::Zero { page, fill } => pd.place(page, &[fill; PAGE_SIZE]),
        PcRecord::Page { page } => pd.place(page, buf),
        _ => return Ok(false),
    };
    r.map(|p| p == vmig::postcopy::Placement::Placed).map_err(|e| io::Error::other(e.to_string()))
}

fn receive(conns: &DestConns, ram: &GuestRam, w: &mut DestWorkload, out: &mut DestOutcome) -> io::Result<()> {
    let pages = ram.pages();
    let mut r = BufReader::with_capacity(256 << 10, conns.main.try_clone()?);
    let n = crate::wire::read_header(&mut r)?;
    if n != pages {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("stream has {n} pages, guest {pages}")));
    }
    let mut buf = Vec::with_capacity(PAGE_SIZE);
    // Precopy: plain writes, nothing runs on this RAM yet.
    let discard = loop {
        match proto::read(&mut r, pages, &mut buf)? {
            PcRecord::Zero { page, fill } => {
                if fill != 0 || !ram.page_is_zero(page) {
                    ram.fill_page(page, fill);
                }
                out.precopy_pages += 1;
            }
            PcRecord::Page { page } => {
                ram.write_page(page, buf[..].try_into().expect("a page"));
                out.precopy_pages += 1;
            }
            PcRecord::Eos => {}
            PcRecord::End => return Err(io::Error::new(io::ErrorKind::InvalidData, "stream ended before the switch")),
            PcRecord::Switch { vcpus, guest_writes, discard } => {
                if vcpus != w.vcpus {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{vcpus} vCPUs, expected {}", w.vcpus),
                    ));
                }
                w.counter_base = guest_writes;
                break discard;
            }
        }
    };
    let t_switch = Instant::now();
    // POSTCOPY_RAM_DISCARD: stale copies go, so the guest faults on them.
    for (i, word) in discard.iter().enumerate() {
        let mut bits = *word;
        while bits != 0 {
            let p = i as u64 * 64 + u64::from(bits.trailing_zeros());
            bits &= bits - 1;
            // SAFETY: one page inside our mapping; no thread uses this RAM
            // yet (the guest starts below).
            let rc = unsafe { libc::madvise(ram.page_ptr(p).cast(), PAGE_SIZE, libc::MADV_DONTNEED) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            out.discarded += 1;
        }
    }
    // POSTCOPY_LISTEN: register RAM before any vCPU can touch it.
    // SAFETY: `ram` is an anonymous private mapping that outlives `pd`.
    let pd = unsafe { PostcopyDest::new(ram.page_ptr(0), ram.len(), PAGE_SIZE) }
        .map_err(|e| io::Error::other(format!("userfaultfd: {e}")))?;
    let is_discarded = |p: u64| discard[(p / 64) as usize] & (1 << (p % 64)) != 0;
    for p in (0..pages).filter(|&p| !is_discarded(p)) {
        pd.mark_present(p).map_err(|e| io::Error::other(e.to_string()))?;
    }
    let guest = DestGuest::default();
    let result = std::thread::scope(|s| -> io::Result<()> {
        let (pd, guest, w) = (&pd, &guest, *w);
        // POSTCOPY_RUN: the guest starts now.
        let vcpus: Vec<_> = (0..w.vcpus)
            .map(|id| {
                std::thread::Builder::new()
                    .name(format!("dst-vcpu/{id}"))
                    .spawn_scoped(s, move || vcpu::vcpu_loop(guest, ram, pd, id, w))
            })
            .collect::<io::Result<_>>()?;
        let mut ret = conns.main.try_clone()?;
        let fault = std::thread::Builder::new().name("fault-service".into()).spawn_scoped(s, move || {
            super::netlink::request_path_thread();
            let r = pd.serve_faults(&mut |p| ret.write_all(&p.to_be_bytes()));
            if r.is_ok() && !pd.is_failed() {
                // Every page is in: tell the source.
                ret.write_all(&proto::COMPLETE.to_be_bytes())
            } else {
                // Unblock the bulk reader too.
                let _ = ret.shutdown(Shutdown::Both);
                r.map_err(|e| io::Error::other(e.to_string()))
            }
        })?;
        let preempt = match &conns.preempt {
            Some(sock) => {
                let sock = sock.try_clone()?;
                let main = conns.main.try_clone()?;
                Some(std::thread::Builder::new().name("preempt-rx".into()).spawn_scoped(s, move || {
                    super::netlink::request_path_thread();
                    let mut r = BufReader::with_capacity(64 << 10, sock);
                    let mut buf = Vec::with_capacity(PAGE_SIZE);
                    let mut n = 0u64;
                    let res = loop {
                        match proto::read(&mut r, pages, &mut buf) {
                            Ok(PcRecord::End) => break Ok(()),
                            Ok(rec) => match place(pd, &rec, &buf) {
                                Ok(placed) => n += u64::from(placed),
                                Err(e) => break Err(e),
                            },
                            // EOF once every page is in: the source closed it.
                            Err(_) if pd.remaining() == 0 => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    };
                    if res.is_err() {
                        pd.fail();
                        let _ = main.shutdown(Shutdown::Both);
                    }
                    (n, res)
                })?)
            }
            None => None,
        };
        // The bulk stream, until END.
        let bulk = loop {
            let rec = match proto::read(&mut r, pages, &mut buf) {
                Ok(PcRecord::End) => break Ok(()),
                Ok(rec) => rec,
                Err(e) => break Err(e),
            };
            match place(pd, &rec, &buf) {
                Ok(placed) => out.bulk_pages += u64::from(placed),
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = &bulk {
            out.error.get_or_insert(format!("bulk stream: {e}"));
            pd.fail();
        }
        // Every page is either placed now or on the preempt connection; the
        // fault service ends when the last one is placed (or on failure).
        let fault_res = fault.join().map_err(|_| io::Error::other("fault-service thread panicked"))?;
        if !pd.is_failed() {
            out.postcopy_ms = t_switch.elapsed().as_secs_f64() * 1000.0;
        }
        // Relaxed: splits a statistic only.
        guest.complete.store(true, Ordering::Relaxed);
        if let Err(e) = &fault_res {
            out.error.get_or_insert(format!("return path: {e}"));
            pd.fail();
        }
        if pd.is_failed() {
            // Unblock the preempt reader.
            conns.shutdown();
        }
        if let Some(h) = preempt {
            let (n, res) = h.join().map_err(|_| io::Error::other("preempt thread panicked"))?;
            out.preempt_pages = n;
            if let Err(e) = res {
                out.error.get_or_insert(format!("preempt connection: {e}"));
            }
        }
        // The guest keeps running on complete memory; stop it for the check.
        // Relaxed: the join below orders the vCPUs' work.
        guest.stop.store(true, Ordering::Relaxed);
        for h in vcpus {
            out.journals.push(h.join().map_err(|_| io::Error::other("vCPU thread panicked"))?);
        }
        out.guest_s = t_switch.elapsed().as_secs_f64();
        Ok(())
    });
    out.counters = pd.counters();
    out.latency = pd.latency();
    // Relaxed: the vCPUs have been joined.
    out.writes = guest.writes.load(Ordering::Relaxed);
    out.writes_postcopy = guest.writes_postcopy.load(Ordering::Relaxed);
    if pd.is_failed() && out.error.is_none() {
        out.error = Some("postcopy failed".into());
    }
    result
}

/// Verifies `dst` against `src` plus the destination guest's writes.
pub fn verify(src: &GuestRam, dst: &GuestRam, out: &DestOutcome) -> crate::report::Verification {
    match vcpu::verify(src, dst, &out.journals) {
        (pages, 0, _) => crate::report::Verification::Match { pages },
        (_, n, first) => crate::report::Verification::Mismatch { first_page: first.unwrap_or(0), pages: n },
    }
}
