//! Bounded lockless pointer ring: single- or multi-producer, single consumer.
//!
//! The algorithm (kfifo indices, DPDK's multi-producer claim, ptr_ring's
//! NULL slots, rtrb's cached indices), its index encoding and its
//! memory-ordering argument are in the module doc of `src/ring/raw/mod.rs`;
//! the benchmark against rtrb, crossbeam and std is in docs/ring.md. This
//! module is the safe Rust face of it: the split into producer
//! and consumer handles makes the single-consumer rule (and, for
//! [`spsc`], the single-producer rule) a property of the types, so safe code
//! cannot break it.
//!
//! ```
//! let (tx, rx) = vmig::ring::mpsc::<Box<u64>>(4).unwrap();
//! let tx2 = tx.clone();
//! tx.enqueue(Box::new(1)).unwrap();
//! tx2.enqueue(Box::new(2)).unwrap();
//! assert_eq!(*rx.dequeue().unwrap(), 1);
//! assert_eq!(*rx.dequeue().unwrap(), 2);
//! assert!(rx.dequeue().is_none());
//! ```

pub(crate) mod raw;

use std::cell::Cell;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::Result;
use raw::{Cursor, RawRing};

/// A value that travels through the ring as one non-NULL pointer.
///
/// # Safety
/// `from_ptr(into_ptr(x))` must give back `x`, and `into_ptr` must never
/// return a pointer the ring could confuse with an empty slot (it cannot:
/// `NonNull`). Neither function may panic: the ring converts items between
/// claiming slots and publishing them.
pub unsafe trait RingItem: Send + Sized {
    /// Gives up ownership as a pointer.
    fn into_ptr(self) -> NonNull<()>;
    /// Takes ownership back.
    ///
    /// # Safety
    /// `ptr` came from `into_ptr` of this type and is used once.
    unsafe fn from_ptr(ptr: NonNull<()>) -> Self;
}

// SAFETY: Box::into_raw / from_raw round-trip, and a Box is never NULL.
unsafe impl<U: Send> RingItem for Box<U> {
    fn into_ptr(self) -> NonNull<()> {
        // SAFETY: Box::into_raw never returns NULL.
        unsafe { NonNull::new_unchecked(Box::into_raw(self)).cast() }
    }
    unsafe fn from_ptr(ptr: NonNull<()>) -> Self {
        // SAFETY: per the trait contract, `ptr` came from `into_ptr` above.
        unsafe { Box::from_raw(ptr.cast::<U>().as_ptr()) }
    }
}

// SAFETY: Arc::into_raw / from_raw round-trip, and an Arc is never NULL.
unsafe impl<U: Send + Sync> RingItem for Arc<U> {
    fn into_ptr(self) -> NonNull<()> {
        // SAFETY: Arc::into_raw never returns NULL.
        unsafe { NonNull::new_unchecked(Arc::into_raw(self).cast_mut()).cast() }
    }
    unsafe fn from_ptr(ptr: NonNull<()>) -> Self {
        // SAFETY: per the trait contract, `ptr` came from `into_ptr` above.
        unsafe { Arc::from_raw(ptr.cast::<U>().as_ptr()) }
    }
}

// SAFETY: the integer is carried in the pointer's address and never
// dereferenced; non-zero maps to non-NULL and back.
unsafe impl RingItem for NonZeroUsize {
    fn into_ptr(self) -> NonNull<()> {
        // SAFETY: a non-zero address is a non-NULL pointer.
        unsafe { NonNull::new_unchecked(std::ptr::without_provenance_mut(self.get())) }
    }
    unsafe fn from_ptr(ptr: NonNull<()>) -> Self {
        // SAFETY: a non-NULL pointer has a non-zero address.
        unsafe { NonZeroUsize::new_unchecked(ptr.as_ptr().addr()) }
    }
}

/// Owns the ring memory; drops any items left in it.
struct Shared<T: RingItem> {
    raw: NonNull<RawRing>,
    _items: PhantomData<T>,
}

// SAFETY: the ring is designed for cross-thread use; items are `Send`.
unsafe impl<T: RingItem> Send for Shared<T> {}
// SAFETY: all shared access goes through atomics; the handle types below
// enforce who may enqueue and dequeue.
unsafe impl<T: RingItem> Sync for Shared<T> {}

impl<T: RingItem> Shared<T> {
    fn new(capacity: u32, flags: u32, start: u32) -> Result<Arc<Self>> {
        let raw = RawRing::alloc_at(capacity, flags, start)?;
        Ok(Arc::new(Shared { raw, _items: PhantomData }))
    }

    fn raw(&self) -> &RawRing {
        // SAFETY: `raw` is live until `drop` below, and `&self` outlives no drop.
        unsafe { self.raw.as_ref() }
    }
}

impl<T: RingItem> Drop for Shared<T> {
    fn drop(&mut self) {
        // The header's cursor copies are stale (the handles kept theirs):
        // drain with an exact cursor.
        let raw = self.raw();
        let mut cur = raw.consumer_cursor_exact();
        // SAFETY: `drop` has exclusive access: every handle is gone, so this
        // is the only consumer, with an exact cursor; each pointer was
        // enqueued by `into_ptr` and is taken once; then the ring is unused.
        unsafe {
            while let Some(p) = raw.dequeue_one(&mut cur, raw.is_mp()) {
                drop(T::from_ptr(p));
            }
            RawRing::destroy(self.raw);
        }
    }
}

/// Creates a single-producer, single-consumer ring of `capacity` slots
/// (a power of two in 2..=2^30); it holds `capacity` items.
///
/// ```
/// let (mut tx, rx) = vmig::ring::spsc::<Box<u32>>(2).unwrap();
/// tx.enqueue(Box::new(7)).unwrap();
/// assert_eq!(*rx.dequeue().unwrap(), 7);
/// assert!(vmig::ring::spsc::<Box<u32>>(3).is_err(), "not a power of two");
/// ```
pub fn spsc<T: RingItem>(capacity: u32) -> Result<(Producer<T>, Consumer<T>)> {
    spsc_at(capacity, 0)
}

/// Creates a multi-producer, single-consumer ring of `capacity` slots
/// (a power of two in 2..=2^30); it holds `capacity` items.
///
/// ```
/// let (tx, rx) = vmig::ring::mpsc::<Box<u32>>(4).unwrap();
/// std::thread::scope(|s| {
///     for i in 0..2 {
///         let tx = tx.clone();
///         s.spawn(move || tx.enqueue(Box::new(i)).unwrap());
///     }
/// });
/// let mut got = [*rx.dequeue().unwrap(), *rx.dequeue().unwrap()];
/// got.sort();
/// assert_eq!(got, [0, 1]);
/// ```
pub fn mpsc<T: RingItem>(capacity: u32) -> Result<(MpProducer<T>, Consumer<T>)> {
    mpsc_at(capacity, 0)
}

/// [`spsc`] with both indices starting at `start` (tests cross the `u32`
/// index wrap by starting near `u32::MAX`).
pub(crate) fn spsc_at<T: RingItem>(capacity: u32, start: u32) -> Result<(Producer<T>, Consumer<T>)> {
    let shared = Shared::new(capacity, 0, start)?;
    let producer = Producer { raw: shared.raw, cur: shared.raw().producer_cursor(), _shared: shared.clone(), _not_sync: PhantomData };
    Ok((producer, Consumer::new(shared)))
}

/// [`mpsc`] with both indices starting at `start`.
pub(crate) fn mpsc_at<T: RingItem>(capacity: u32, start: u32) -> Result<(MpProducer<T>, Consumer<T>)> {
    let shared = Shared::new(capacity, raw::FLAG_MP, start)?;
    Ok((MpProducer { shared: shared.clone() }, Consumer::new(shared)))
}

/// Test hooks for the loom models in `tests/loom_ring.rs` (not an API:
/// only built with `--cfg vmig_loom`).
#[cfg(vmig_loom)]
#[doc(hidden)]
pub mod loom_hooks {
    use super::*;

    /// [`spsc`] with both indices starting at `start`.
    pub fn spsc_at<T: RingItem>(capacity: u32, start: u32) -> Result<(Producer<T>, Consumer<T>)> {
        super::spsc_at(capacity, start)
    }

    /// [`mpsc`] with both indices starting at `start`.
    pub fn mpsc_at<T: RingItem>(capacity: u32, start: u32) -> Result<(MpProducer<T>, Consumer<T>)> {
        super::mpsc_at(capacity, start)
    }
}

/// The one producer of an [`spsc`] ring. `Send`, not `Clone`.
pub struct Producer<T: RingItem> {
    /// `shared.raw`, copied here to save a pointer chase per call.
    raw: NonNull<RawRing>,
    /// The producer's private indices (see [`Cursor`]).
    cur: Cursor,
    /// Keeps the ring alive while `raw` points into it.
    _shared: Arc<Shared<T>>,
    _not_sync: NotSync,
}

// SAFETY: `raw` points into `shared`, which the handle keeps alive and which
// is `Send`; `cur` is plain data. (`NonNull` alone would make it `!Send`.)
unsafe impl<T: RingItem> Send for Producer<T> {}

/// A producer of an [`mpsc`] ring. Clone it for each producing thread.
pub struct MpProducer<T: RingItem> {
    shared: Arc<Shared<T>>,
}

/// The one consumer of a ring. `Send`, not `Clone`, not `Sync`.
pub struct Consumer<T: RingItem> {
    /// `shared.raw`, copied here to save a pointer chase per call.
    raw: NonNull<RawRing>,
    /// The consumer's private indices (see [`Cursor`]); a `Cell` because
    /// `dequeue` takes `&self` (the handle is `!Sync`).
    cur: Cell<Cursor>,
    /// Whether the ring is multi-producer (constant: saves reading the
    /// header's flags per call).
    mp: bool,
    /// Keeps the ring alive while `raw` points into it.
    _shared: Arc<Shared<T>>,
    _not_sync: NotSync,
}

// SAFETY: as for `Producer`: `raw` points into `shared`, kept alive here.
unsafe impl<T: RingItem> Send for Consumer<T> {}

/// `Send` but not `Sync`: a shared reference on two threads would be two
/// producers (or consumers).
type NotSync = PhantomData<std::cell::Cell<()>>;

impl<T: RingItem> Clone for MpProducer<T> {
    fn clone(&self) -> Self {
        MpProducer { shared: self.shared.clone() }
    }
}

impl<T: RingItem> Producer<T> {
    #[inline]
    fn raw(&self) -> &RawRing {
        // SAFETY: `raw` is live while `shared` is, and `shared` outlives `&self`.
        unsafe { self.raw.as_ref() }
    }

    /// Enqueues `item`, or gives it back when the ring is full.
    ///
    /// ```
    /// let (mut tx, _rx) = vmig::ring::spsc::<Box<u8>>(2).unwrap();
    /// tx.enqueue(Box::new(1)).unwrap();
    /// tx.enqueue(Box::new(2)).unwrap();
    /// assert_eq!(tx.enqueue(Box::new(3)), Err(Box::new(3)), "full: the item comes back");
    /// ```
    #[inline]
    pub fn enqueue(&mut self, item: T) -> std::result::Result<(), T> {
        let p = item.into_ptr();
        // SAFETY: an SP ring, `&mut self` on its only Producer (no concurrent
        // enqueue), and `cur` is that producer's cursor.
        let raw = unsafe { self.raw.as_ref() };
        // SAFETY: see above.
        match unsafe { raw.sp_enqueue(&mut self.cur, p) } {
            Ok(()) => Ok(()),
            // SAFETY: the ring did not take `p`; it is still ours.
            Err(_) => Err(unsafe { T::from_ptr(p) }),
        }
    }

    /// Enqueues items from the front of `items` while there is room; returns
    /// how many moved (they are removed from `items`; the rest stay, in order).
    ///
    /// ```
    /// let (mut tx, rx) = vmig::ring::spsc::<Box<u8>>(2).unwrap();
    /// let mut items = vec![Box::new(1), Box::new(2), Box::new(3)];
    /// assert_eq!(tx.enqueue_burst(&mut items), 2);
    /// assert_eq!(items, [Box::new(3)], "what did not fit stays");
    /// assert_eq!(rx.dequeue(), Some(Box::new(1)));
    /// ```
    pub fn enqueue_burst(&mut self, items: &mut Vec<T>) -> u32 {
        let want = u32::try_from(items.len()).unwrap_or(u32::MAX);
        // SAFETY: `raw` is live while `shared` is.
        let raw = unsafe { self.raw.as_ref() };
        // SAFETY: SP ring, only producer, its cursor. The ring asks for
        // `n <= want` items once it has room for them; `drain(..n)` yields
        // exactly `n` non-NULL pointers, and neither it nor `into_ptr` panics.
        unsafe { raw.sp_enqueue_burst_with(&mut self.cur, want, |n| items.drain(..n as usize).map(|t| t.into_ptr().as_ptr())) }
    }

    /// Items queued (a snapshot).
    ///
    /// ```
    /// let (mut tx, _rx) = vmig::ring::spsc::<Box<u8>>(4).unwrap();
    /// tx.enqueue(Box::new(1)).unwrap();
    /// assert_eq!(tx.count(), 1);
    /// ```
    pub fn count(&self) -> u32 {
        self.raw().count()
    }

    /// Slots in the ring.
    ///
    /// ```
    /// let (tx, _rx) = vmig::ring::spsc::<Box<u8>>(4).unwrap();
    /// assert_eq!(tx.capacity(), 4);
    /// ```
    pub fn capacity(&self) -> u32 {
        self.raw().capacity()
    }
}

impl<T: RingItem> MpProducer<T> {
    /// Enqueues `item`, or gives it back when the ring is full.
    ///
    /// ```
    /// let (tx, _rx) = vmig::ring::mpsc::<Box<u8>>(2).unwrap();
    /// tx.enqueue(Box::new(1)).unwrap();
    /// tx.clone().enqueue(Box::new(2)).unwrap();
    /// assert_eq!(tx.enqueue(Box::new(3)), Err(Box::new(3)), "full: the item comes back");
    /// ```
    pub fn enqueue(&self, item: T) -> std::result::Result<(), T> {
        let p = item.into_ptr();
        // SAFETY: an MP ring allows concurrent enqueues.
        match unsafe { self.shared.raw().mp_enqueue(p) } {
            Ok(()) => Ok(()),
            // SAFETY: the ring did not take `p`; it is still ours.
            Err(_) => Err(unsafe { T::from_ptr(p) }),
        }
    }

    /// Enqueues items from the front of `items` while there is room, as one
    /// contiguous claim (they stay adjacent in the ring); returns how many.
    ///
    /// ```
    /// let (tx, rx) = vmig::ring::mpsc::<Box<u8>>(2).unwrap();
    /// let mut items = vec![Box::new(1), Box::new(2), Box::new(3)];
    /// assert_eq!(tx.enqueue_burst(&mut items), 2);
    /// assert_eq!(items, [Box::new(3)], "what did not fit stays");
    /// assert_eq!(rx.dequeue(), Some(Box::new(1)));
    /// ```
    pub fn enqueue_burst(&self, items: &mut Vec<T>) -> u32 {
        let want = u32::try_from(items.len()).unwrap_or(u32::MAX);
        // SAFETY: an MP ring allows concurrent enqueues. The ring asks for
        // `n <= want` items once it has claimed room for them; `drain(..n)`
        // yields exactly `n` non-NULL pointers, and neither it nor `into_ptr`
        // panics.
        unsafe { self.shared.raw().mp_enqueue_burst_with(want, |n| items.drain(..n as usize).map(|t| t.into_ptr().as_ptr())) }
    }

    /// Items queued (a snapshot).
    ///
    /// ```
    /// let (tx, _rx) = vmig::ring::mpsc::<Box<u8>>(4).unwrap();
    /// tx.enqueue(Box::new(1)).unwrap();
    /// assert_eq!(tx.count(), 1);
    /// ```
    pub fn count(&self) -> u32 {
        self.shared.raw().count()
    }

    /// Slots in the ring.
    ///
    /// ```
    /// let (tx, _rx) = vmig::ring::mpsc::<Box<u8>>(16).unwrap();
    /// assert_eq!(tx.capacity(), 16);
    /// ```
    pub fn capacity(&self) -> u32 {
        self.shared.raw().capacity()
    }
}

impl<T: RingItem> Consumer<T> {
    fn new(shared: Arc<Shared<T>>) -> Self {
        let raw = shared.raw();
        Consumer { raw: shared.raw, cur: Cell::new(raw.consumer_cursor()), mp: raw.is_mp(), _shared: shared, _not_sync: PhantomData }
    }

    #[inline]
    fn raw(&self) -> &RawRing {
        // SAFETY: `raw` is live while `shared` is, and `shared` outlives `&self`.
        unsafe { self.raw.as_ref() }
    }

    /// Dequeues up to `max` items, handing each to `sink`.
    ///
    /// # Safety
    /// `sink` does not panic.
    #[inline]
    unsafe fn dequeue_with(&self, max: u32, sink: impl FnMut(NonNull<()>)) -> u32 {
        let mut cur = self.cur.get();
        // SAFETY: this is the only Consumer and it is !Sync; `cur` is its
        // cursor and `mp` the ring's mode; forwarded `sink` contract.
        let n = unsafe { self.raw().dequeue_with(&mut cur, self.mp, max, sink) };
        self.cur.set(cur);
        n
    }

    /// Dequeues the oldest ready item.
    ///
    /// ```
    /// let (mut tx, rx) = vmig::ring::spsc::<Box<u8>>(2).unwrap();
    /// assert!(rx.dequeue().is_none());
    /// tx.enqueue(Box::new(9)).unwrap();
    /// assert_eq!(rx.dequeue(), Some(Box::new(9)));
    /// ```
    #[inline]
    pub fn dequeue(&self) -> Option<T> {
        let mut cur = self.cur.get();
        // SAFETY: this is the only Consumer and it is !Sync; `cur` is its
        // cursor and `mp` the ring's mode.
        let p = unsafe { self.raw().dequeue_one(&mut cur, self.mp) };
        self.cur.set(cur);
        // SAFETY: the pointer was enqueued by `into_ptr` and is taken once.
        p.map(|p| unsafe { T::from_ptr(p) })
    }

    /// Dequeues up to `max` ready items onto the end of `out`; returns how many.
    ///
    /// ```
    /// let (mut tx, rx) = vmig::ring::spsc::<Box<u8>>(4).unwrap();
    /// tx.enqueue_burst(&mut vec![Box::new(1), Box::new(2), Box::new(3)]);
    /// let mut out = Vec::new();
    /// assert_eq!(rx.dequeue_burst(&mut out, 2), 2);
    /// assert_eq!(out, [Box::new(1), Box::new(2)]);
    /// ```
    pub fn dequeue_burst(&self, out: &mut Vec<T>, max: u32) -> u32 {
        let max = max.min(self.capacity());
        // Reserve first, so the pushes below cannot reallocate (and panic).
        out.reserve(max as usize);
        // SAFETY: each pointer was enqueued by `into_ptr` and is taken once;
        // the sink cannot panic (no reallocation, see above).
        unsafe { self.dequeue_with(max, |p| out.push(T::from_ptr(p))) }
    }

    /// Items queued (a snapshot).
    ///
    /// ```
    /// let (mut tx, rx) = vmig::ring::spsc::<Box<u8>>(4).unwrap();
    /// tx.enqueue(Box::new(1)).unwrap();
    /// assert_eq!(rx.count(), 1);
    /// ```
    pub fn count(&self) -> u32 {
        self.raw().count()
    }

    /// Whether no item is queued (a snapshot).
    ///
    /// ```
    /// let (mut tx, rx) = vmig::ring::spsc::<Box<u8>>(2).unwrap();
    /// assert!(rx.is_empty());
    /// tx.enqueue(Box::new(1)).unwrap();
    /// assert!(!rx.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// Slots in the ring.
    ///
    /// ```
    /// let (_tx, rx) = vmig::ring::spsc::<Box<u8>>(8).unwrap();
    /// assert_eq!(rx.capacity(), 8);
    /// ```
    pub fn capacity(&self) -> u32 {
        self.raw().capacity()
    }
}

impl<T: RingItem> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("count", &self.count()).field("capacity", &self.capacity()).finish()
    }
}

impl<T: RingItem> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("count", &self.count()).field("capacity", &self.capacity()).finish()
    }
}

impl<T: RingItem> std::fmt::Debug for MpProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpProducer").field("count", &self.count()).field("capacity", &self.capacity()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops.
    #[derive(Debug)]
    struct Counted(usize, Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn bad_capacity_is_rejected() {
        for cap in [0, 1, 3, 12, (1 << 30) + 1, u32::MAX] {
            assert!(spsc::<Box<u8>>(cap).is_err());
            assert!(mpsc::<Box<u8>>(cap).is_err());
        }
    }

    #[test]
    fn full_ring_gives_the_item_back() {
        let (mut tx, rx) = spsc::<Box<u32>>(2).unwrap();
        tx.enqueue(Box::new(1)).unwrap();
        tx.enqueue(Box::new(2)).unwrap();
        assert_eq!(*tx.enqueue(Box::new(3)).unwrap_err(), 3);
        assert_eq!(tx.count(), 2);
        assert_eq!(*rx.dequeue().unwrap(), 1);
        tx.enqueue(Box::new(3)).unwrap();
        assert_eq!(*rx.dequeue().unwrap(), 2);
        assert_eq!(*rx.dequeue().unwrap(), 3);
        assert!(rx.dequeue().is_none());
        assert!(rx.is_empty());

        let (tx, rx) = mpsc::<Arc<u32>>(2).unwrap();
        let a = Arc::new(7);
        tx.enqueue(a.clone()).unwrap();
        tx.clone().enqueue(a.clone()).unwrap();
        let back = tx.enqueue(a.clone()).unwrap_err();
        assert!(Arc::ptr_eq(&back, &a));
        drop(back);
        assert_eq!(Arc::strong_count(&a), 3);
        drop((rx.dequeue(), rx.dequeue()));
        assert_eq!(Arc::strong_count(&a), 1);
    }

    #[test]
    fn bursts_move_a_prefix_and_keep_the_rest() {
        for mp in [false, true] {
            let (mut sp, mpp, rx);
            type Enqueue = Box<dyn FnMut(&mut Vec<Box<u32>>) -> u32>;
            let mut enqueue: Enqueue = if mp {
                (mpp, rx) = mpsc::<Box<u32>>(4).unwrap();
                Box::new(move |v| mpp.enqueue_burst(v))
            } else {
                (sp, rx) = spsc_at::<Box<u32>>(4, u32::MAX - 2).unwrap();
                Box::new(move |v| sp.enqueue_burst(v))
            };
            let mut items: Vec<Box<u32>> = (1..=6).map(Box::new).collect();
            assert_eq!(enqueue(&mut items), 4);
            assert_eq!(items.iter().map(|b| **b).collect::<Vec<_>>(), [5, 6], "the rest stays, in order");
            assert_eq!(enqueue(&mut items), 0);
            assert_eq!(items.len(), 2);
            let mut out = vec![Box::new(0)];
            assert_eq!(rx.dequeue_burst(&mut out, 3), 3);
            assert_eq!(out.iter().map(|b| **b).collect::<Vec<_>>(), [0, 1, 2, 3], "appended");
            assert_eq!(enqueue(&mut items), 2);
            assert!(items.is_empty());
            out.clear();
            assert_eq!(rx.dequeue_burst(&mut out, 100), 3);
            assert_eq!(out.iter().map(|b| **b).collect::<Vec<_>>(), [4, 5, 6]);
            assert_eq!(rx.dequeue_burst(&mut out, 100), 0);
            assert_eq!(enqueue(&mut Vec::new()), 0);
        }
    }

    /// Dropping the last handle drops the items still queued, exactly once,
    /// including after the indices wrapped.
    #[test]
    fn drop_frees_queued_items() {
        for (mp, start) in [(false, 0), (true, 0), (false, u32::MAX - 3), (true, u32::MAX - 3)] {
            let drops = Arc::new(AtomicUsize::new(0));
            let item = |v| Box::new(Counted(v, drops.clone()));
            if mp {
                let (tx, rx) = mpsc_at::<Box<Counted>>(8, start).unwrap();
                for v in 0..6 {
                    tx.enqueue(item(v)).unwrap();
                }
                assert_eq!(rx.dequeue().unwrap().0, 0);
                assert_eq!(drops.load(Ordering::Relaxed), 1);
                drop(rx); // the producer still holds the ring
                assert_eq!(drops.load(Ordering::Relaxed), 1);
                tx.enqueue(item(6)).unwrap();
                drop(tx);
            } else {
                let (mut tx, rx) = spsc_at::<Box<Counted>>(8, start).unwrap();
                for v in 0..6 {
                    tx.enqueue(item(v)).unwrap();
                }
                assert_eq!(rx.dequeue().unwrap().0, 0);
                drop(tx);
                assert_eq!(drops.load(Ordering::Relaxed), 1);
                drop(rx);
            }
            let expected = if mp { 7 } else { 6 };
            assert_eq!(drops.load(Ordering::Relaxed), expected, "mp {mp} start {start}");
        }
    }

    #[test]
    fn handles_move_between_threads() {
        let n = if cfg!(miri) { 100 } else { 10_000 };
        let (mut tx, rx) = spsc::<Box<usize>>(4).unwrap();
        let t = std::thread::spawn(move || {
            for v in 0..n {
                let mut b = Box::new(v);
                while let Err(back) = tx.enqueue(b) {
                    b = back;
                    std::thread::yield_now();
                }
            }
        });
        let mut next = 0;
        while next < n {
            match rx.dequeue() {
                Some(b) => {
                    assert_eq!(*b, next);
                    next += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        t.join().unwrap();
    }
}
