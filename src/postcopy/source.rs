//! The source side of postcopy: the urgent-request queue and the sent map.
//!
//! The return-path thread receives the destination's page requests and
//! either queues them for the migration thread ([`UrgentSender`], a vmig
//! MPSC ring: several return-path threads may feed one migration thread)
//! or, in preempt-full mode, sends the page itself. Every sender claims the
//! page in the [`SentMap`] first, so the background stream, the migration
//! thread and the return-path thread send each page at most once: in
//! postcopy the source's guest is stopped, so a page never changes after
//! the switch and one copy is all the destination needs.

use std::num::NonZeroUsize;

use super::pagemap::PageMap;
use crate::error::{Error, Result};
use crate::ring::{self, Consumer, MpProducer};

/// Which pages have been sent since the switch.
#[derive(Debug)]
pub struct SentMap {
    map: PageMap,
}

impl SentMap {
    /// A map of `pages` unsent pages.
    pub fn new(pages: u64) -> SentMap {
        SentMap { map: PageMap::new(pages) }
    }

    /// Claims `page` for sending: true if the caller must send it now,
    /// false if another sender did or will.
    pub fn claim(&self, page: u64) -> bool {
        self.map.claim(page)
    }

    /// Whether `page` was claimed.
    pub fn is_sent(&self, page: u64) -> bool {
        self.map.test(page)
    }

    /// The first unsent page at or after `from` (a hint; claim before sending).
    pub fn next_unsent(&self, from: u64) -> Option<u64> {
        self.map.next_clear(from)
    }

    /// Pages claimed so far (a snapshot).
    pub fn count(&self) -> u64 {
        self.map.count()
    }

    /// Pages in the map.
    pub fn pages(&self) -> u64 {
        self.map.pages()
    }
}

/// Producer end of the urgent queue (cloneable; any thread).
#[derive(Clone)]
pub struct UrgentSender {
    tx: MpProducer<NonZeroUsize>,
}

/// Consumer end of the urgent queue (the migration thread).
pub struct UrgentReceiver {
    rx: Consumer<NonZeroUsize>,
}

impl std::fmt::Debug for UrgentSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrgentSender").field("queued", &self.tx.count()).finish()
    }
}

impl std::fmt::Debug for UrgentReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrgentReceiver").field("queued", &self.rx.count()).finish()
    }
}

/// An urgent-request queue of `capacity` pages (a power of two, see
/// [`ring::mpsc`]). A page travels as `page + 1` (the ring carries non-NULL
/// values); FIFO per producer.
pub fn urgent_queue(capacity: u32) -> Result<(UrgentSender, UrgentReceiver)> {
    let (tx, rx) = ring::mpsc(capacity)?;
    Ok((UrgentSender { tx }, UrgentReceiver { rx }))
}

impl UrgentSender {
    /// Queues a request for `page`; `Full` when the queue is full.
    pub fn request(&self, page: u64) -> Result<()> {
        let v = usize::try_from(page).ok().and_then(|p| NonZeroUsize::new(p.wrapping_add(1)));
        let v = v.ok_or(Error::InvalidArgument("page number too large"))?;
        self.tx.enqueue(v).map_err(|_| Error::Full)
    }
}

impl UrgentReceiver {
    /// The oldest queued request, if any.
    pub fn next(&self) -> Option<u64> {
        self.rx.dequeue().map(|v| v.get() as u64 - 1)
    }

    /// Whether nothing is queued (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(all(test, not(vmig_loom)))]
mod tests {
    use super::*;

    #[test]
    fn queue_and_sent_map() {
        let (tx, rx) = urgent_queue(4).unwrap();
        tx.request(0).unwrap();
        tx.clone().request(7).unwrap();
        assert_eq!(rx.next(), Some(0));
        assert_eq!(rx.next(), Some(7));
        assert_eq!(rx.next(), None);
        let s = SentMap::new(10);
        assert!(s.claim(3));
        assert!(!s.claim(3));
        assert_eq!(s.next_unsent(3), Some(4));
        assert_eq!(s.count(), 1);
    }
}
