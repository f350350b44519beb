//! The sleep/wake hand-off: a thread sleeps only when it has nothing to do,
//! and is woken only if it is asleep.
//!
//! One [`WakeFlag`] belongs to one sleeper (a worker, or the migration thread
//! waiting for results). The flag is both the "I am going to sleep" word of a
//! Dekker-style handshake and the futex word the sleeper waits on, so the
//! common case (the sleeper is awake) costs the waker one fence and one load,
//! never a system call.
//!
//! # Protocol
//!
//! Sleeper (after finding its ring empty):
//!
//! 1. `prepare_sleep`: S1 store `SLEEPING`, then F1 = `fence(SeqCst)`;
//! 2. re-check the ring (and the shutdown flag); if there is work, `cancel_sleep`;
//! 3. otherwise `sleep`: futex-wait while the word is still `SLEEPING`.
//!
//! Waker (after publishing work into the ring):
//!
//! 1. `wake_if_sleeping`: F2 = `fence(SeqCst)`, then L2 load the word;
//! 2. only if it is `SLEEPING`: CAS it to `AWAKE` and futex-wake.
//!
//! **Why no wake-up is lost.** F1 and F2 are SeqCst fences, so they are
//! totally ordered. If F1 comes first, L2 (after F2) must see S1 (before F1)
//! or a later value, so the waker sees `SLEEPING` and wakes. If F2 comes
//! first, the sleeper's re-check (after F1) must see the waker's publication
//! (the ring's R1 store, sequenced before F2), so it does not sleep. This is
//! the store-buffering (Dekker) pattern: without the two fences x86 may let
//! each side's load pass its own earlier store and both would miss the other.
//! The fences pair only with each other; the data itself travels through the
//! ring's own Release/Acquire pairs (R1/A1 in `crate::ring::raw`).
//!
//! **Why the futex never sleeps through a wake.** The waker sets the word to
//! `AWAKE` before `FUTEX_WAKE`; `FUTEX_WAIT` re-reads the word under the
//! kernel's bucket lock and returns at once if it is no longer `SLEEPING`.
//! A spurious return (signal, stale wake) only sends the sleeper round its
//! loop to re-check the ring.
//!
//! Under `cfg(vmig_loom)` `FUTEX_WAIT` is modelled by its definition (block while
//! the word still reads `SLEEPING`) as a `yield_now` loop, and `FUTEX_WAKE`
//! by nothing: the sleeper leaves once it sees the waker's store. A lost
//! wake-up is then a sleeper spinning forever, which loom reports. So
//! `tests/loom_pool.rs` checks this exact protocol (the atomics and fences
//! come from `crate::sync`).

use crate::sync::{fence, AtomicU32, Ordering};

const AWAKE: u32 = 0;
const SLEEPING: u32 = 1;

/// Busy-wait rounds (`pause` instructions) before a waiting thread either
/// sleeps or, with a spin budget ([`Spin::budget_ns`]), starts yielding:
/// ~1-2 us on current x86, enough to catch a result that is about to be
/// published without a system call.
#[cfg_attr(vmig_loom, allow(dead_code))]
pub const SPIN_PAUSES: u32 = 64;

/// How a thread that ran out of work waits before it goes through the
/// sleep protocol: [`SPIN_PAUSES`] polls, then polls with `sched_yield`
/// for up to `budget_ns`. The budget is the pool's `spin_ns` option; it is
/// dropped to 0 when the pool's threads do not fit on the CPUs
/// ([`spinning_pays`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spin {
    /// Nanoseconds of yielding polls after the pauses; 0: none.
    pub budget_ns: u64,
}

impl Spin {
    /// Only the [`SPIN_PAUSES`] polls, then sleep.
    pub const PAUSES_ONLY: Spin = Spin { budget_ns: 0 };

    /// The spin of a pool of `threads` workers with the `spin_ns` option.
    pub fn for_pool(threads: u32, spin_ns: u32) -> Spin {
        Spin { budget_ns: if spinning_pays(threads) { u64::from(spin_ns) } else { 0 } }
    }
}

/// A sleeper's flag and futex word; see the module documentation.
pub struct WakeFlag {
    state: AtomicU32,
}

impl Default for WakeFlag {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for WakeFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Relaxed: a diagnostic snapshot; nothing is read on the strength of it.
        f.debug_struct("WakeFlag").field("sleeping", &(self.state.load(Ordering::Relaxed) == SLEEPING)).finish()
    }
}

impl WakeFlag {
    /// A flag whose owner is awake.
    pub fn new() -> Self {
        WakeFlag { state: AtomicU32::new(AWAKE) }
    }

    /// Sleeper, step 1: announce the intent to sleep. The caller must then
    /// re-check for work and call [`cancel_sleep`](Self::cancel_sleep) or
    /// [`sleep`](Self::sleep).
    #[inline]
    pub fn prepare_sleep(&self) {
        // S1 (Relaxed): ordered before the re-check by F1; it is read by L2
        // in `wake_if_sleeping`, whose F2 pairs with F1.
        self.state.store(SLEEPING, Ordering::Relaxed);
        // F1 (SeqCst): pairs with F2 in `wake_if_sleeping` (Dekker).
        fence(Ordering::SeqCst);
    }

    /// Sleeper: work turned up during the re-check; do not sleep.
    #[inline]
    pub fn cancel_sleep(&self) {
        // Relaxed: only tells later wakers they need not call the kernel; a
        // waker that still sees SLEEPING issues one harmless FUTEX_WAKE.
        self.state.store(AWAKE, Ordering::Relaxed);
    }

    /// Sleeper, step 3: block until a waker clears the flag (or spuriously).
    /// The caller re-checks for work afterwards.
    pub fn sleep(&self) {
        #[cfg(not(vmig_loom))]
        {
            // SAFETY: the futex word is a live AtomicU32 owned by `self`;
            // FUTEX_WAIT only reads it and returns at once if it is not
            // SLEEPING. A NULL timeout waits without limit.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.state.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    SLEEPING,
                    std::ptr::null::<libc::timespec>(),
                );
            }
        }
        #[cfg(vmig_loom)]
        // Relaxed: FUTEX_WAIT's own check of the word; no data rides on it.
        while self.state.load(Ordering::Relaxed) == SLEEPING {
            crate::sync::yield_now();
        }
        // Relaxed: a spurious return leaves SLEEPING behind; clear it so the
        // next waker does not pay a needless system call.
        self.state.store(AWAKE, Ordering::Relaxed);
    }

    /// Waker: call after publishing work the sleeper is waiting for. Wakes
    /// the sleeper only if it announced sleep; returns whether it did.
    #[inline]
    pub fn wake_if_sleeping(&self) -> bool {
        self.is_sleeping() && self.wake_sleeper()
    }

    /// Waker, step 1 on its own: F2 then L2. `true` means the sleeper has
    /// announced sleep (or is asleep) and the waker must decide now, from
    /// state it reads after this call, whether to [`wake_sleeper`](Self::wake_sleeper).
    #[inline]
    pub fn is_sleeping(&self) -> bool {
        // F2 (SeqCst): pairs with F1 in `prepare_sleep` (Dekker).
        fence(Ordering::SeqCst);
        // L2 (Relaxed): F2/F1 give the ordering; see the module docs.
        self.state.load(Ordering::Relaxed) == SLEEPING
    }

    /// Waker, step 2: clears the flag and wakes the sleeper if nobody else
    /// did; returns whether this call woke it.
    #[inline]
    pub fn wake_sleeper(&self) -> bool {
        // Relaxed: the CAS only elects one waker; no data rides on it, and
        // it writes nothing when the sleeper is already awake.
        #[cfg(not(vmig_loom))]
        if self.state.compare_exchange(SLEEPING, AWAKE, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return false;
        }
        // loom 0.7 lets a later plain store slip before an RMW in the
        // modification order (tokio-rs/loom#254, fix pending in #391), which
        // would show as a lost wake-up that cannot happen. The model
        // therefore elects with a load and a store: at worst two wakers both
        // wake (a spurious wake-up, which the protocol tolerates); the
        // Dekker part under test (S1/F1/F2/L2) is unchanged.
        #[cfg(vmig_loom)]
        {
            // Relaxed, as the RMW it stands in for; the fences F1/F2 order it.
            if self.state.load(Ordering::Relaxed) != SLEEPING {
                return false;
            }
            self.state.store(AWAKE, Ordering::Relaxed);
        }
        self.wake();
        true
    }

    fn wake(&self) {
        #[cfg(not(vmig_loom))]
        // SAFETY: the futex word is a live AtomicU32 owned by `self`.
        unsafe {
            libc::syscall(libc::SYS_futex, self.state.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1);
        }
        // Under loom the sleeper's loop sees the store that cleared the flag.
    }
}

/// Whether a pool of `threads` workers plus its submitting thread fits on
/// the CPUs this process may use. Only then is there a core to spin on: with
/// more runnable threads than cores, CFS gives each its share, so a
/// submitter spinning for ring space (the common wait: workers are the
/// bottleneck) would take up to a third of the CPU of 2 workers on 2 cores,
/// the very threads it waits for. It sleeps after [`SPIN_PAUSES`] instead.
pub fn spinning_pays(threads: u32) -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (threads as usize) < cpus
}

/// Polls `ready` and returns its first `Some`; `None` means the caller
/// should go through the sleep protocol. Polls [`SPIN_PAUSES`] times, then
/// keeps polling with `sched_yield` for up to `spin.budget_ns`.
///
/// Under `cfg(vmig_loom)` the same steps run with time replaced by a count:
/// one poll for the pauses and, with a budget, one `yield_now` and one more
/// poll, so the models explore a spin that gives up as well as one that
/// succeeds, then the sleep.
#[inline]
pub fn spin_for<T>(spin: Spin, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    #[cfg(vmig_loom)]
    {
        if let Some(v) = ready() {
            return Some(v);
        }
        if spin.budget_ns == 0 {
            return None;
        }
        crate::sync::yield_now();
        ready()
    }
    #[cfg(not(vmig_loom))]
    {
        for _ in 0..SPIN_PAUSES {
            if let Some(v) = ready() {
                return Some(v);
            }
            crate::sync::spin_loop();
        }
        if spin.budget_ns == 0 {
            return ready();
        }
        let start = std::time::Instant::now();
        loop {
            if let Some(v) = ready() {
                return Some(v);
            }
            if start.elapsed().as_nanos() as u64 >= spin.budget_ns {
                return None;
            }
            crate::sync::yield_now();
        }
    }
}
