//! The source's end of the migration connection: a buffered TCP writer with
//! QEMU's rate limit.
//!
//! QEMU (`migration/migration.c`, `migration_rate_limit`) cuts time into
//! windows of `BUFFER_DELAY` = 100 ms and lets the migration thread put at
//! most `max-bandwidth / 10` bytes in each; once the window's budget is
//! spent the thread sleeps until the window ends. This writer does the same
//! on every flush, so the link never carries more than the limit over any
//! window, and the time the migration thread sleeps is visible to it as in
//! QEMU (it cannot feed the compression threads while it sleeps).

use std::io::{self, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// QEMU's BUFFER_DELAY.
pub const WINDOW: Duration = Duration::from_millis(100);
/// Bytes buffered before a socket write: large enough that the syscall cost
/// is noise (16 pages), small against a window's budget (1.25 MB at 1 Gbit/s).
const FLUSH_AT: usize = 64 << 10;

/// A rate-limited, buffered writer.
pub struct Link {
    sock: TcpStream,
    buf: Vec<u8>,
    per_window: u64,
    window_start: Instant,
    window_bytes: u64,
    /// Bytes handed to `put` so far (QEMU counts transferred bytes at put).
    pub transferred: u64,
    /// Time spent sleeping on the rate limit.
    pub throttled: Duration,
}

impl Link {
    /// Wraps `sock`, limited to `bandwidth` bytes per second.
    pub fn new(sock: TcpStream, bandwidth: u64) -> Link {
        sock.set_nodelay(true).ok();
        let per_window = (bandwidth as u128 * WINDOW.as_nanos() / 1_000_000_000) as u64;
        Link {
            sock,
            buf: Vec::with_capacity(FLUSH_AT * 2),
            per_window: per_window.max(1),
            window_start: Instant::now(),
            window_bytes: 0,
            transferred: 0,
            throttled: Duration::ZERO,
        }
    }

    /// Buffer that the next record is appended to; call `commit` after.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Accounts the bytes appended since the last commit and writes out the
    /// buffer once it is large enough.
    pub fn commit(&mut self, appended: usize) -> io::Result<()> {
        self.transferred += appended as u64;
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes out everything buffered, sleeping on the rate limit.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut off = 0;
        while off < self.buf.len() {
            let now = Instant::now();
            if now.duration_since(self.window_start) >= WINDOW {
                self.window_start = now;
                self.window_bytes = 0;
            }
            let room = self.per_window.saturating_sub(self.window_bytes);
            if room == 0 {
                let end = self.window_start + WINDOW;
                let nap = end.saturating_duration_since(now);
                std::thread::sleep(nap);
                self.throttled += nap;
                continue;
            }
            let n = (room as usize).min(self.buf.len() - off);
            self.sock.write_all(&self.buf[off..off + n])?;
            self.window_bytes += n as u64;
            off += n;
        }
        self.buf.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn rate_limit_holds_over_windows() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let rx = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut v = Vec::new();
            s.read_to_end(&mut v).unwrap();
            v.len()
        });
        // 10 MB/s = 1 MB per window; 3.5 MB needs 3 full windows of sleep.
        let mut link = Link::new(TcpStream::connect(addr).unwrap(), 10_000_000);
        let t = Instant::now();
        for _ in 0..350 {
            link.buf().extend_from_slice(&[0u8; 10_000]);
            link.commit(10_000).unwrap();
        }
        link.flush().unwrap();
        let el = t.elapsed();
        drop(link);
        assert_eq!(rx.join().unwrap(), 3_500_000);
        assert!(el >= Duration::from_millis(300), "{el:?}");
    }
}
