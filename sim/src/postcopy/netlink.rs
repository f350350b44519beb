//! The postcopy link model: one physical link of a fixed rate shared by the
//! bulk and the urgent connection, over loopback TCP.
//!
//! * [`Wire`] serialises bytes at the link rate: a sender reserves the wire
//!   for a segment and the segment reaches the peer's socket when its last
//!   byte would have left the NIC. Reservations of all connections share one
//!   clock, so both flows together never exceed the rate.
//! * [`QueuedConn`] (the bulk stream): the writer fills a bounded send
//!   queue (the socket buffer, `sndbuf` bytes) and blocks while it is full,
//!   as a blocking `send()` does; a NIC thread drains it segment by segment
//!   onto the wire. The migration thread keeps it full, so the bulk stream
//!   saturates the link, and anything put into it waits behind the queue.
//! * [`DirectConn`] (the preempt connection): its queue is empty whenever
//!   an urgent page comes (urgent pages are few), so the writer itself
//!   reserves the wire: the page waits only behind the bulk segment on the
//!   wire (at most `nic_queue_us`) and its own transfer time.
//!
//! Segments of the bulk stream are `nic_queue_us` long: that is how much
//! bulk data sits in the NIC ahead of an urgent packet.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The shared link.
#[derive(Debug)]
pub struct Wire {
    bytes_per_s: u64,
    next_free: Mutex<Instant>,
    /// How far behind "now" the bulk stream may reuse the wire's clock: a
    /// NIC thread that woke late catches up instead of losing link time.
    credit: Duration,
    /// Bytes per segment of the bulk stream.
    pub segment: usize,
}

impl Wire {
    /// A link of `bytes_per_s` whose NIC holds `nic_queue` of data.
    pub fn new(bytes_per_s: u64, nic_queue: Duration) -> Arc<Wire> {
        let segment = ((bytes_per_s as f64 * nic_queue.as_secs_f64()) as usize).max(4096);
        Arc::new(Wire {
            bytes_per_s,
            next_free: Mutex::new(Instant::now()),
            // 10 ms: covers a late wake-up of the NIC thread on a loaded
            // host (measured at load 16: bulk at 44% of 1 Gbit/s with 0.2 ms of
            // credit, 52-67% with 2 ms).
            credit: Duration::from_millis(10),
            segment,
        })
    }

    /// Time `n` bytes take on the wire.
    pub fn transfer_time(&self, n: usize) -> Duration {
        Duration::from_secs_f64(n as f64 / self.bytes_per_s as f64)
    }

    /// Reserves the wire for `n` bytes after everything reserved so far;
    /// returns when their last byte leaves. `catch_up`: the bulk stream's
    /// NIC may use up to `credit` of link time it left idle while it was
    /// late; an urgent packet never starts before now.
    pub fn reserve(&self, n: usize, catch_up: bool) -> Instant {
        let now = Instant::now();
        let mut nf = self.next_free.lock();
        let floor = if catch_up { now.checked_sub(self.credit).unwrap_or(now) } else { now };
        let start = (*nf).max(floor);
        *nf = start + self.transfer_time(n);
        *nf
    }
}

/// Sleeps until `t`.
pub fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// `--rt-threads`: the latency-path threads run SCHED_FIFO. Set once by
/// `postcopy::run` before any of them starts. Relaxed: read by threads
/// spawned after the store (spawn orders it).
pub static RT_THREADS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Timer slack 1 ns for this thread, so the link model's short sleeps end
/// on time (the default slack is 50 µs).
pub fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer and affects only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
}

/// Prepares a thread on the request path (fault service, return path,
/// preempt receiver): [`precise_timers`], and with `--rt-threads`
/// SCHED_FIFO priority 1, so a loaded host's run queue does not add to
/// every hop (a real source and destination are separate hosts). These
/// threads block between events, so they cannot starve the host. The bulk
/// NIC thread stays at normal priority: at FIFO it would starve the
/// destination's bulk reader.
pub fn request_path_thread() {
    precise_timers();
    if RT_THREADS.load(std::sync::atomic::Ordering::Relaxed) {
        let p = libc::sched_param { sched_priority: 1 };
        // SAFETY: valid sched_param for this thread (0 = the caller); a
        // failure (no CAP_SYS_NICE) leaves the normal policy.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) };
    }
}

struct QState {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    closed: bool,
    err: Option<String>,
}

struct Queue {
    st: Mutex<QState>,
    space: Condvar,
    data: Condvar,
    cap: usize,
}

/// The bulk connection: a bounded send queue drained onto the wire.
pub struct QueuedConn {
    q: Arc<Queue>,
    nic: Option<JoinHandle<()>>,
    shut: TcpStream,
}

impl QueuedConn {
    /// Starts the NIC thread writing to `sock`; the queue holds `cap` bytes.
    pub fn new(sock: TcpStream, wire: Arc<Wire>, cap: usize) -> io::Result<QueuedConn> {
        sock.set_nodelay(true)?;
        let shut = sock.try_clone()?;
        let q = Arc::new(Queue {
            st: Mutex::new(QState { chunks: VecDeque::new(), bytes: 0, closed: false, err: None }),
            space: Condvar::new(),
            data: Condvar::new(),
            cap,
        });
        let q2 = q.clone();
        let nic = std::thread::Builder::new().name("nic/bulk".into()).spawn(move || nic_loop(&q2, sock, &wire))?;
        Ok(QueuedConn { q, nic: Some(nic), shut })
    }

    /// Queues `chunk`, blocking while the queue is full. Fails once the
    /// connection is broken.
    pub fn send(&self, chunk: Vec<u8>) -> io::Result<()> {
        let mut st = self.q.st.lock();
        while st.err.is_none() && st.bytes > 0 && st.bytes + chunk.len() > self.q.cap {
            self.q.space.wait(&mut st);
        }
        if let Some(e) = &st.err {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, e.clone()));
        }
        st.bytes += chunk.len();
        st.chunks.push_back(chunk);
        self.q.data.notify_one();
        Ok(())
    }

    /// Bytes queued and not yet on the wire.
    pub fn queued(&self) -> usize {
        self.q.st.lock().bytes
    }

    /// Waits until everything queued is on the wire, then stops the NIC
    /// thread (the socket stays open for the peer to read).
    pub fn finish(&mut self) -> io::Result<()> {
        self.q.st.lock().closed = true;
        self.q.data.notify_one();
        if let Some(h) = self.nic.take() {
            let _ = h.join();
        }
        match self.q.st.lock().err.clone() {
            Some(e) => Err(io::Error::new(io::ErrorKind::BrokenPipe, e)),
            None => Ok(()),
        }
    }

    /// Breaks the connection (both directions), failing pending sends.
    pub fn shutdown(&self) {
        let _ = self.shut.shutdown(std::net::Shutdown::Both);
        let mut st = self.q.st.lock();
        st.err.get_or_insert_with(|| "connection shut down".into());
        st.chunks.clear();
        self.q.space.notify_all();
        self.q.data.notify_all();
    }
}

impl Drop for QueuedConn {
    fn drop(&mut self) {
        if self.nic.is_some() {
            self.shutdown();
            let _ = self.finish();
        }
    }
}

fn nic_loop(q: &Queue, mut sock: TcpStream, wire: &Wire) {
    precise_timers();
    loop {
        let chunk = {
            let mut st = q.st.lock();
            loop {
                if st.err.is_some() {
                    return;
                }
                if let Some(c) = st.chunks.pop_front() {
                    break c;
                }
                if st.closed {
                    return;
                }
                q.data.wait(&mut st);
            }
        };
        // Segments whose departure time has already passed (the thread
        // woke late) go out in one write with the next one that is due.
        let mut off = 0;
        let mut done = 0;
        while done < chunk.len() {
            let end = if off < chunk.len() {
                let n = wire.segment.min(chunk.len() - off);
                let end = wire.reserve(n, true);
                off += n;
                end
            } else {
                Instant::now()
            };
            if end <= Instant::now() && off < chunk.len() {
                continue;
            }
            sleep_until(end);
            let r = sock.write_all(&chunk[done..off]);
            let mut st = q.st.lock();
            if let Err(e) = r {
                st.err.get_or_insert(e.to_string());
                q.space.notify_all();
                return;
            }
            st.bytes -= off - done;
            done = off;
            q.space.notify_all();
        }
    }
}

/// The preempt connection: the writer reserves the wire itself.
pub struct DirectConn {
    sock: TcpStream,
    wire: Arc<Wire>,
}

impl DirectConn {
    /// Wraps `sock`.
    pub fn new(sock: TcpStream, wire: Arc<Wire>) -> io::Result<DirectConn> {
        sock.set_nodelay(true)?;
        Ok(DirectConn { sock, wire })
    }

    /// Sends `data`, returning once it has reached the peer's socket.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        sleep_until(self.wire.reserve(data.len(), false));
        self.sock.write_all(data)
    }

    /// Breaks the connection (both directions).
    pub fn shutdown(&self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// Loopback round trip of an 8-byte request answered by `answer` bytes,
/// measured now on this machine: (median, mean) in microseconds over
/// `rounds` exchanges. `rt`: both ends run as request-path threads do with
/// `--rt-threads` (SCHED_FIFO); otherwise at the default policy.
pub fn loopback_rtt_us(answer: usize, rounds: usize, rt: bool) -> io::Result<(f64, f64)> {
    let prep = move || if rt { request_path_thread() } else { precise_timers() };
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let echo = std::thread::spawn(move || -> io::Result<()> {
        prep();
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut req = [0u8; 8];
        let page = vec![0x5au8; answer];
        while s.read_exact(&mut req).is_ok() {
            s.write_all(&page)?;
        }
        Ok(())
    });
    let mut v = std::thread::spawn(move || -> io::Result<Vec<f64>> {
        prep();
        let mut c = TcpStream::connect(addr)?;
        c.set_nodelay(true)?;
        let mut buf = vec![0u8; answer];
        let mut v = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let t = Instant::now();
            c.write_all(&(i as u64).to_be_bytes())?;
            c.read_exact(&mut buf)?;
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(v)
    })
    .join()
    .map_err(|_| io::Error::other("RTT thread panicked"))??;
    let _ = echo.join();
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok((v[v.len() / 2], mean))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bulk queue at 100 Mbit/s: 2.5 MB take about 200 ms, and a direct
    /// send made meanwhile is not stuck behind the queue.
    #[test]
    fn bulk_is_paced_and_urgent_overtakes_it() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let mut n = 0;
            for _ in 0..2 {
                let (mut s, _) = l.accept().unwrap();
                n += std::thread::spawn(move || {
                    let mut v = Vec::new();
                    s.read_to_end(&mut v).unwrap();
                    v.len()
                })
                .join()
                .unwrap();
            }
            n
        });
        let wire = Wire::new(12_500_000, Duration::from_micros(50));
        let mut bulk = QueuedConn::new(TcpStream::connect(addr).unwrap(), wire.clone(), 1 << 20).unwrap();
        let mut urgent = DirectConn::new(TcpStream::connect(addr).unwrap(), wire.clone()).unwrap();
        let t = Instant::now();
        for _ in 0..80 {
            bulk.send(vec![1u8; 32 << 10]).unwrap();
        }
        let tu = Instant::now();
        urgent.send(&[2u8; 4096]).unwrap();
        let urgent_took = tu.elapsed();
        bulk.finish().unwrap();
        let el = t.elapsed();
        drop(bulk);
        drop(urgent);
        assert_eq!(reader.join().unwrap(), 80 * (32 << 10) + 4096);
        assert!(el >= Duration::from_millis(190), "{el:?}");
        // Behind a 1 MiB queue (84 ms at this rate) it would take 84 ms.
        assert!(urgent_took < Duration::from_millis(40), "{urgent_took:?}");
    }
}
