//! Ring throughput and latency against the usual Rust queues, in one run.
//!
//! `cargo bench --bench ring` prints, for each scenario, the median of
//! several repetitions (the queues take turns, so drift in machine load
//! touches all alike) and vmig's ratio against every baseline measured in
//! the same run (the machine is shared and noisy: compare ratios, not
//! absolute numbers). `cargo test --benches` runs it in quick mode (tiny
//! counts, one repetition) so the bench keeps compiling and stays correct.
//!
//! Every queue gets the same capacity ([`CAP`]) and the same waiting
//! strategy when it is full or empty ([`Backoff`]), and moves `usize`s
//! (vmig: `NonZeroUsize`, the same word), so the numbers compare the data
//! structures rather than the wake-up policies.

use std::collections::VecDeque;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::mpsc::{sync_channel, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;

#[path = "support/affinity.rs"]
mod affinity;

/// Slots in every queue under test.
const CAP: usize = 1024;
/// Items per burst in the burst scenario.
const BURST: usize = 32;

struct Params {
    /// Items moved per throughput repetition (split between producers).
    items: usize,
    /// Enqueue+dequeue pairs per latency repetition.
    pairs: usize,
    reps: usize,
}

/// Spin briefly, then yield: on a 2-core host with 3 threads (2 producers +
/// consumer) pure spinning would burn the time slice of the thread we wait for.
struct Backoff(u32);
impl Backoff {
    fn new() -> Self {
        Backoff(0)
    }
    fn wait(&mut self) {
        self.0 += 1;
        if self.0 < 64 {
            std::hint::spin_loop();
        } else {
            self.0 = 0;
            thread::yield_now();
        }
    }
}

fn nz(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap()
}

/// Checks the consumer saw every producer's items exactly once, in order.
/// Producer `p` sends `p + 1 + k * producers` for k = 0.. (never 0).
struct Order {
    next: Vec<usize>,
}
impl Order {
    fn new(producers: usize) -> Self {
        Order {
            next: (0..producers).map(|p| p + 1).collect(),
        }
    }
    #[inline]
    fn see(&mut self, v: usize) {
        let p = (v - 1) % self.next.len();
        assert_eq!(v, self.next[p], "lost, duplicated or reordered item");
        self.next[p] += self.next.len();
    }
}

/// CPU placement for the next runs, as CPU numbers: entry `p` is producer
/// `p`'s CPU, the last entry the consumer's. `None`: the scheduler places
/// the threads.
///
/// With 2 producers and a consumer on a 2-CPU machine, two threads share a
/// CPU, and which two decides the result more than the queue does (two
/// producers on one CPU never contend on the claim, but they time-slice).
/// The unpinned tables therefore swing between runs; the placement table
/// measures each placement on its own.
static PLACEMENT: Mutex<Option<Vec<usize>>> = Mutex::new(None);

fn pin_to(cpu: usize) {
    affinity::set_affinity(&[cpu]).unwrap_or_else(|e| panic!("sched_setaffinity(CPU {cpu}): {e}"));
}

/// Runs `measure` with the threads pinned as `cpus` says (see
/// [`PLACEMENT`]); `cpus` names CPUs by their index in the process's
/// affinity mask.
fn pinned<R>(cpus: &[usize], measure: impl FnOnce() -> R) -> R {
    let allowed = affinity::allowed_cpus();
    *PLACEMENT.lock().unwrap() = Some(cpus.iter().map(|&i| allowed[i]).collect());
    let r = measure();
    *PLACEMENT.lock().unwrap() = None;
    r
}

/// Runs `producers` threads calling `produce(p, items_of_p)` and the
/// consumer `consume(total)` on this thread; returns items per second.
/// Pinning the consumer and restoring its mask stay outside the timing.
fn run_threads<P, C>(producers: usize, items: usize, produce: P, consume: C) -> f64
where
    P: Fn(usize, usize) + Send + Sync + 'static,
    C: FnOnce(usize),
{
    let per = items / producers;
    let produce = Arc::new(produce);
    let placement = PLACEMENT.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let restore = placement.as_ref().map(|cpus| {
        let allowed = affinity::allowed_cpus();
        pin_to(cpus[cpus.len() - 1]);
        allowed
    });
    let start = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let produce = produce.clone();
            let cpu = placement.as_ref().map(|cpus| cpus[p]);
            thread::spawn(move || {
                if let Some(cpu) = cpu {
                    pin_to(cpu);
                }
                produce(p, per)
            })
        })
        .collect();
    consume(per * producers);
    let secs = start.elapsed().as_secs_f64();
    for h in handles {
        h.join().unwrap();
    }
    if let Some(allowed) = restore {
        affinity::set_affinity(&allowed).expect("restoring the affinity mask");
    }
    (per * producers) as f64 / secs
}

fn item(p: usize, k: usize, producers: usize) -> usize {
    p + 1 + k * producers
}

/// Producer `p` of `producers` sends its `n` items one at a time;
/// `try_send` says whether the queue took the item (full: wait, retry).
fn send_each(p: usize, n: usize, producers: usize, mut try_send: impl FnMut(usize) -> bool) {
    for k in 0..n {
        let v = item(p, k, producers);
        let mut b = Backoff::new();
        while !try_send(v) {
            b.wait();
        }
    }
}

/// The consumer takes `total` items one at a time, checking each
/// producer's order; `try_receive` gives `None` when the queue is empty.
fn receive_each(total: usize, producers: usize, mut try_receive: impl FnMut() -> Option<usize>) {
    let mut order = Order::new(producers);
    let mut b = Backoff::new();
    for _ in 0..total {
        loop {
            if let Some(v) = try_receive() {
                order.see(v);
                break;
            }
            b.wait();
        }
    }
}

fn vmig_spsc(items: usize) -> f64 {
    let (tx, rx) = vmig::ring::spsc::<NonZeroUsize>(CAP as u32).unwrap();
    let tx = Mutex::new(Some(tx));
    run_threads(
        1,
        items,
        move |_, n| {
            let mut tx = tx.lock().unwrap().take().unwrap();
            send_each(0, n, 1, |v| tx.enqueue(nz(v)).is_ok());
        },
        |total| receive_each(total, 1, || rx.dequeue().map(NonZeroUsize::get)),
    )
}

fn vmig_mpsc(producers: usize, items: usize) -> f64 {
    let (tx, rx) = vmig::ring::mpsc::<NonZeroUsize>(CAP as u32).unwrap();
    run_threads(
        producers,
        items,
        move |p, n| send_each(p, n, producers, |v| tx.enqueue(nz(v)).is_ok()),
        |total| receive_each(total, producers, || rx.dequeue().map(NonZeroUsize::get)),
    )
}

fn vmig_spsc_burst(items: usize) -> f64 {
    let (tx, rx) = vmig::ring::spsc::<NonZeroUsize>(CAP as u32).unwrap();
    let tx = Mutex::new(Some(tx));
    run_threads(
        1,
        items,
        move |_, n| {
            let mut tx = tx.lock().unwrap().take().unwrap();
            let mut buf = Vec::with_capacity(BURST);
            let mut k = 0;
            let mut b = Backoff::new();
            while k < n || !buf.is_empty() {
                while buf.len() < BURST && k < n {
                    buf.push(nz(item(0, k, 1)));
                    k += 1;
                }
                if tx.enqueue_burst(&mut buf) == 0 {
                    b.wait();
                }
            }
        },
        |total| {
            let mut order = Order::new(1);
            let mut out = Vec::with_capacity(BURST);
            let mut got = 0;
            let mut b = Backoff::new();
            while got < total {
                if rx.dequeue_burst(&mut out, BURST as u32) == 0 {
                    b.wait();
                }
                for v in out.drain(..) {
                    order.see(v.get());
                    got += 1;
                }
            }
        },
    )
}

fn rtrb_spsc(items: usize) -> f64 {
    let (tx, mut rx) = rtrb::RingBuffer::<usize>::new(CAP);
    let tx = Mutex::new(Some(tx));
    run_threads(
        1,
        items,
        move |_, n| {
            let mut tx = tx.lock().unwrap().take().unwrap();
            send_each(0, n, 1, |v| tx.push(v).is_ok());
        },
        |total| receive_each(total, 1, || rx.pop().ok()),
    )
}

fn rtrb_spsc_burst(items: usize) -> f64 {
    let (tx, mut rx) = rtrb::RingBuffer::<usize>::new(CAP);
    let tx = Mutex::new(Some(tx));
    run_threads(
        1,
        items,
        move |_, n| {
            let mut tx = tx.lock().unwrap().take().unwrap();
            let mut buf = [0usize; BURST];
            let mut k = 0;
            let mut b = Backoff::new();
            while k < n {
                let len = BURST.min(n - k);
                for (i, slot) in buf[..len].iter_mut().enumerate() {
                    *slot = item(0, k + i, 1);
                }
                let mut rest: &[usize] = &buf[..len];
                while !rest.is_empty() {
                    let (done, left) = tx.push_partial_slice(rest);
                    if done.is_empty() {
                        b.wait();
                    }
                    rest = left;
                }
                k += len;
            }
        },
        |total| {
            let mut order = Order::new(1);
            let mut buf = [0usize; BURST];
            let mut got = 0;
            let mut b = Backoff::new();
            while got < total {
                let (done, _) = rx.pop_partial_slice(&mut buf);
                if done.is_empty() {
                    b.wait();
                }
                for &v in done.iter() {
                    order.see(v);
                    got += 1;
                }
            }
        },
    )
}

fn arrayq(producers: usize, items: usize) -> f64 {
    let q = Arc::new(ArrayQueue::<usize>::new(CAP));
    let qp = q.clone();
    run_threads(
        producers,
        items,
        move |p, n| send_each(p, n, producers, |v| qp.push(v).is_ok()),
        |total| receive_each(total, producers, || q.pop()),
    )
}

/// ArrayQueue has no burst call: a burst is 32 single operations.
fn arrayq_burst(items: usize) -> f64 {
    let q = Arc::new(ArrayQueue::<usize>::new(CAP));
    let qp = q.clone();
    run_threads(
        1,
        items,
        move |_, n| {
            let mut b = Backoff::new();
            let mut k = 0;
            while k < n {
                let len = BURST.min(n - k);
                let mut i = 0;
                while i < len {
                    if qp.push(item(0, k + i, 1)).is_ok() {
                        i += 1;
                    } else {
                        b.wait();
                    }
                }
                k += len;
            }
        },
        |total| {
            let mut order = Order::new(1);
            let mut got = 0;
            let mut b = Backoff::new();
            while got < total {
                let mut moved = 0;
                while moved < BURST {
                    match q.pop() {
                        Some(v) => {
                            order.see(v);
                            moved += 1;
                        }
                        None => break,
                    }
                }
                if moved == 0 {
                    b.wait();
                }
                got += moved;
            }
        },
    )
}

fn channel(producers: usize, items: usize) -> f64 {
    let (tx, rx) = sync_channel::<usize>(CAP);
    let tx = Mutex::new(tx);
    run_threads(
        producers,
        items,
        move |p, n| {
            let tx = tx.lock().unwrap().clone();
            send_each(p, n, producers, |v| match tx.try_send(v) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => false,
                Err(e) => panic!("{e}"),
            });
        },
        |total| {
            receive_each(total, producers, || match rx.try_recv() {
                Ok(v) => Some(v),
                Err(TryRecvError::Empty) => None,
                Err(e) => panic!("{e}"),
            })
        },
    )
}

fn mutex_deque(producers: usize, items: usize) -> f64 {
    let q = Arc::new(Mutex::new(VecDeque::<usize>::with_capacity(CAP)));
    let qp = q.clone();
    run_threads(
        producers,
        items,
        move |p, n| {
            send_each(p, n, producers, |v| {
                let mut g = qp.lock().unwrap();
                let room = g.len() < CAP;
                if room {
                    g.push_back(v);
                }
                room
            })
        },
        |total| receive_each(total, producers, || q.lock().unwrap().pop_front()),
    )
}

/// Nanoseconds per enqueue+dequeue pair on one thread (no contention: the
/// cost of the instructions and fences themselves).
fn pair_latency(pairs: usize, mut push: impl FnMut(usize), mut pop: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    for k in 1..=pairs {
        push(k);
        let v = pop();
        debug_assert_eq!(v, k);
        black_box(v);
    }
    start.elapsed().as_nanos() as f64 / pairs as f64
}

fn latencies(pairs: usize) -> Vec<(&'static str, f64)> {
    let (mut tx, rx) = vmig::ring::spsc::<NonZeroUsize>(CAP as u32).unwrap();
    let vmig_sp = pair_latency(
        pairs,
        |v| tx.enqueue(nz(v)).unwrap(),
        || rx.dequeue().unwrap().get(),
    );
    let (tx, rx) = vmig::ring::mpsc::<NonZeroUsize>(CAP as u32).unwrap();
    let vmig_mp = pair_latency(
        pairs,
        |v| tx.enqueue(nz(v)).unwrap(),
        || rx.dequeue().unwrap().get(),
    );
    let (mut tx, mut rx) = rtrb::RingBuffer::<usize>::new(CAP);
    let rtrb = pair_latency(pairs, |v| tx.push(v).unwrap(), || rx.pop().unwrap());
    let q = ArrayQueue::<usize>::new(CAP);
    let aq = pair_latency(pairs, |v| q.push(v).unwrap(), || q.pop().unwrap());
    let (tx, rx) = sync_channel::<usize>(CAP);
    let ch = pair_latency(
        pairs,
        |v| tx.try_send(v).unwrap(),
        || rx.try_recv().unwrap(),
    );
    let q = Mutex::new(VecDeque::<usize>::with_capacity(CAP));
    let mx = pair_latency(
        pairs,
        |v| q.lock().unwrap().push_back(v),
        || q.lock().unwrap().pop_front().unwrap(),
    );
    vec![
        ("vmig spsc", vmig_sp),
        ("vmig mpsc", vmig_mp),
        ("rtrb", rtrb),
        ("crossbeam ArrayQueue", aq),
        ("std sync_channel", ch),
        ("Mutex<VecDeque>", mx),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One queue under test: its name and a run returning items per second.
type Run<'a> = (&'static str, &'a dyn Fn(usize) -> f64);

/// Runs every queue `p.reps` times, interleaved (A B C A B C ...), so a
/// slow drift in machine load touches all of them alike; returns each
/// queue's median, in the order given.
fn measure(p: &Params, runs: &[Run]) -> Vec<(&'static str, f64)> {
    let mut results = vec![Vec::new(); runs.len()];
    for _ in 0..p.reps {
        for (i, (_, run)) in runs.iter().enumerate() {
            results[i].push(run(p.items));
        }
    }
    runs.iter().zip(results).map(|((name, _), r)| (*name, median(r))).collect()
}

/// Prints one throughput table: vmig first, then each baseline with
/// vmig's ratio against it.
fn table(title: &str, rows: &[(&str, f64)]) {
    println!("\n{title}");
    println!("  {:<28} {:>14} {:>12}", "queue", "Mitems/s", "vmig ratio");
    let vmig = rows[0].1;
    for (name, v) in rows {
        let ratio = if *name == rows[0].0 {
            String::from("-")
        } else {
            format!("{:.2}x", vmig / v)
        };
        println!("  {:<28} {:>14.1} {:>12}", name, v / 1e6, ratio);
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    let full = std::env::args().any(|a| a == "--bench");
    // Optional section filters: `cargo bench --bench ring -- spsc mpsc placement burst latency`.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |section: &str| filters.is_empty() || filters.iter().any(|f| f == section);
    let p = if full {
        Params {
            items: 4_000_000,
            pairs: 20_000_000,
            reps: 7,
        }
    } else {
        Params {
            items: 20_000,
            pairs: 10_000,
            reps: 1,
        }
    };
    println!(
        "ring bench: capacity {CAP} for every queue, {} items per run, median of {} runs{}",
        p.items,
        p.reps,
        if full {
            ""
        } else {
            " (quick mode: numbers meaningless)"
        }
    );

    if want("spsc") {
        table(
            "SPSC throughput",
            &measure(
                &p,
                &[
                    ("vmig spsc", &vmig_spsc),
                    ("rtrb", &rtrb_spsc),
                    ("crossbeam ArrayQueue", &|n| arrayq(1, n)),
                    ("std sync_channel", &|n| channel(1, n)),
                    ("Mutex<VecDeque>", &|n| mutex_deque(1, n)),
                ],
            ),
        );
    }
    if want("mpsc") {
        table(
            "MPSC throughput, 2 producers",
            &measure(
                &p,
                &[
                    ("vmig mpsc", &|n| vmig_mpsc(2, n)),
                    ("crossbeam ArrayQueue", &|n| arrayq(2, n)),
                    ("std sync_channel", &|n| channel(2, n)),
                    ("Mutex<VecDeque>", &|n| mutex_deque(2, n)),
                ],
            ),
        );
    }
    if want("placement") {
        if affinity::allowed_cpus().len() < 2 {
            println!("\nplacement: skipped, fewer than 2 CPUs allowed");
        } else {
            println!("\nPinned placements (threads -> CPUs), Mitems/s and vmig ratio");
            let pair = |cpus: &[usize], runs: &[Run]| {
                let r = pinned(cpus, || measure(&p, runs));
                (r[0].1, r[1].1)
            };
            let sp = |cpus: &[usize]| pair(cpus, &[("vmig", &vmig_spsc), ("rtrb", &rtrb_spsc)]);
            let mp = |cpus: &[usize]| pair(cpus, &[("vmig", &|n| vmig_mpsc(2, n)), ("ArrayQueue", &|n| arrayq(2, n))]);
            let row = |name: &str, base: &str, (v, b): (f64, f64)| {
                println!("  {:<52} vmig {:>7.1}  {:<10} {:>7.1}  {:.2}x", name, v / 1e6, base, b / 1e6, v / b);
            };
            row("SPSC: producer CPU 0, consumer CPU 1", "rtrb", sp(&[0, 1]));
            row("MPSC: producers CPU 0 and 1, consumer CPU 1", "ArrayQueue", mp(&[0, 1, 1]));
            row("MPSC: producers both CPU 0, consumer CPU 1", "ArrayQueue", mp(&[0, 0, 1]));
        }
    }
    if want("burst") {
        table(
            &format!("SPSC burst-of-{BURST} throughput"),
            &measure(
                &p,
                &[
                    ("vmig spsc burst", &vmig_spsc_burst),
                    ("rtrb push/pop_partial_slice", &rtrb_spsc_burst),
                    ("crossbeam ArrayQueue x32", &arrayq_burst),
                    ("vmig spsc single ops", &vmig_spsc),
                ],
            ),
        );
    }
    if !want("latency") {
        return;
    }

    let runs: Vec<Vec<(&str, f64)>> = (0..p.reps).map(|_| latencies(p.pairs)).collect();
    println!(
        "\nSingle-thread enqueue+dequeue pair latency ({} pairs)",
        p.pairs
    );
    println!(
        "  {:<28} {:>14} {:>12}",
        "queue", "ns/pair", "vmig spsc ratio"
    );
    let med = |i: usize| median(runs.iter().map(|r| r[i].1).collect());
    let vmig = med(0);
    for (i, (name, _)) in runs[0].iter().enumerate() {
        let v = med(i);
        // Lower is better: the ratio is baseline time / vmig time.
        let ratio = if i == 0 {
            String::from("-")
        } else {
            format!("{:.2}x", v / vmig)
        };
        println!("  {:<28} {:>14.2} {:>12}", name, v, ratio);
    }
}
