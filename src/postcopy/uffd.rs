//! userfaultfd(2), missing-page mode: the few ioctls postcopy needs.
//!
//! The libc crate does not carry `linux/userfaultfd.h`, so its structures and
//! ioctl numbers are written out here from the kernel's UAPI header (stable
//! since Linux 4.3; `/dev/userfaultfd` since 6.1). The unit tests pin every
//! size and every ioctl number against the values `_IOWR`/`_IOR` give on
//! x86-64 and aarch64, so a transcription error fails the build's tests.
//!
//! The descriptor is opened without `UFFD_USER_MODE_ONLY`: a vCPU thread
//! faults inside `KVM_RUN` (a kernel-mode access through GUP), and those
//! faults must reach the handler too. That needs `CAP_SYS_PTRACE` (or
//! `vm.unprivileged_userfaultfd = 1`) for the syscall, or access to
//! `/dev/userfaultfd`, which is tried second.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// UFFD_API: the API version handshaked with UFFDIO_API.
pub const UFFD_API: u64 = 0xAA;
/// UFFDIO_REGISTER_MODE_MISSING: report faults on pages not yet populated.
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
/// UFFD_EVENT_PAGEFAULT: the `event` of a page-fault message.
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

const UFFDIO: u64 = 0xAA;
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// Linux's `_IOC(dir, type, nr, size)` (asm-generic layout, used by x86-64
/// and aarch64).
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (UFFDIO << 8) | nr
}

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioApi {
    /// Requested API (UFFD_API).
    pub api: u64,
    /// Requested features in, supported features out.
    pub features: u64,
    /// Supported ioctls (bit n = ioctl nr n), out.
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioRange {
    /// Start address (page aligned).
    pub start: u64,
    /// Length in bytes (a multiple of the page size).
    pub len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioRegister {
    /// The range to register.
    pub range: UffdioRange,
    /// UFFDIO_REGISTER_MODE_*.
    pub mode: u64,
    /// Ioctls usable on the range, out.
    pub ioctls: u64,
}

/// `struct uffdio_copy`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioCopy {
    /// Destination (page aligned, inside a registered range).
    pub dst: u64,
    /// Source buffer in this process.
    pub src: u64,
    /// Bytes (a multiple of the page size).
    pub len: u64,
    /// UFFDIO_COPY_MODE_* (0: copy and wake the waiters).
    pub mode: u64,
    /// Bytes copied, or a negative errno, out.
    pub copy: i64,
}

/// `struct uffdio_zeropage`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioZeropage {
    /// Range to map the zero page into.
    pub range: UffdioRange,
    /// UFFDIO_ZEROPAGE_MODE_* (0: map and wake).
    pub mode: u64,
    /// Bytes mapped, or a negative errno, out.
    pub zeropage: i64,
}

/// `struct uffd_msg`, page-fault arm of its union (the only event asked for).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdMsg {
    /// UFFD_EVENT_*.
    pub event: u8,
    /// Reserved.
    pub reserved1: u8,
    /// Reserved.
    pub reserved2: u16,
    /// Reserved.
    pub reserved3: u32,
    /// `arg.pagefault.flags`.
    pub pf_flags: u64,
    /// `arg.pagefault.address`: the faulting address.
    pub pf_address: u64,
    /// `arg.pagefault.feat` (ptid with UFFD_FEATURE_THREAD_ID).
    pub pf_feat: u64,
}

/// UFFDIO_API = _IOWR(UFFDIO, 0x3F, struct uffdio_api).
pub const UFFDIO_API: u64 = ioc(IOC_READ | IOC_WRITE, 0x3F, std::mem::size_of::<UffdioApi>());
/// UFFDIO_REGISTER = _IOWR(UFFDIO, 0x00, struct uffdio_register).
pub const UFFDIO_REGISTER: u64 = ioc(IOC_READ | IOC_WRITE, 0x00, std::mem::size_of::<UffdioRegister>());
/// UFFDIO_UNREGISTER = _IOR(UFFDIO, 0x01, struct uffdio_range).
pub const UFFDIO_UNREGISTER: u64 = ioc(IOC_READ, 0x01, std::mem::size_of::<UffdioRange>());
/// UFFDIO_WAKE = _IOR(UFFDIO, 0x02, struct uffdio_range).
pub const UFFDIO_WAKE: u64 = ioc(IOC_READ, 0x02, std::mem::size_of::<UffdioRange>());
/// UFFDIO_COPY = _IOWR(UFFDIO, 0x03, struct uffdio_copy).
pub const UFFDIO_COPY: u64 = ioc(IOC_READ | IOC_WRITE, 0x03, std::mem::size_of::<UffdioCopy>());
/// UFFDIO_ZEROPAGE = _IOWR(UFFDIO, 0x04, struct uffdio_zeropage).
pub const UFFDIO_ZEROPAGE: u64 = ioc(IOC_READ | IOC_WRITE, 0x04, std::mem::size_of::<UffdioZeropage>());
/// USERFAULTFD_IOC_NEW = _IO(0xAA, 0x00), on /dev/userfaultfd.
pub const USERFAULTFD_IOC_NEW: u64 = UFFDIO << 8;

/// Most fault messages one [`Uffd::read_faults`] call returns.
pub const FAULT_BATCH: usize = 64;

/// What a placement ioctl did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The page was installed (and its waiters woken).
    Installed,
    /// Something already populated the page (EEXIST): nothing was written.
    AlreadyMapped,
}

/// An open userfaultfd.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
}

impl Uffd {
    /// Opens a non-blocking, close-on-exec userfaultfd (syscall first, then
    /// /dev/userfaultfd) and handshakes UFFD_API with no extra features.
    pub fn open() -> io::Result<Uffd> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: userfaultfd(2) takes only an int flags argument.
        let mut fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) } as RawFd;
        let first = io::Error::last_os_error();
        if fd < 0 {
            fd = open_dev(flags).map_err(|e| {
                io::Error::new(e.kind(), format!("userfaultfd: syscall: {first}; /dev/userfaultfd: {e}"))
            })?;
        }
        // SAFETY: fd is a freshly opened descriptor this function owns.
        let uffd = Uffd { fd: unsafe { OwnedFd::from_raw_fd(fd) } };
        let mut api = UffdioApi { api: UFFD_API, ..Default::default() };
        uffd.ioctl(UFFDIO_API, &mut api)?;
        Ok(uffd)
    }

    fn ioctl<T>(&self, req: u64, arg: &mut T) -> io::Result<()> {
        // SAFETY: every caller passes the structure `req` encodes (the
        // constants above are built from those structures' sizes); the
        // kernel reads and writes only that structure.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), req as _, arg as *mut T) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Registers `[start, start + len)` in missing mode.
    pub fn register(&self, start: usize, len: usize) -> io::Result<()> {
        let mut r = UffdioRegister {
            range: UffdioRange { start: start as u64, len: len as u64 },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        self.ioctl(UFFDIO_REGISTER, &mut r)
    }

    /// Unregisters the range; threads waiting in it are woken and their
    /// retried access is then served by the kernel as for unregistered memory.
    pub fn unregister(&self, start: usize, len: usize) -> io::Result<()> {
        let mut r = UffdioRange { start: start as u64, len: len as u64 };
        self.ioctl(UFFDIO_UNREGISTER, &mut r)
    }

    /// Wakes threads waiting on `[start, start + len)`.
    pub fn wake(&self, start: usize, len: usize) -> io::Result<()> {
        let mut r = UffdioRange { start: start as u64, len: len as u64 };
        self.ioctl(UFFDIO_WAKE, &mut r)
    }

    /// Atomically installs `len` bytes from `src` at `dst` and wakes the
    /// waiters: no thread ever sees the page half written.
    ///
    /// # Safety
    /// `src` is valid for reads of `len` bytes.
    pub unsafe fn copy(&self, dst: usize, src: *const u8, len: usize) -> io::Result<Fill> {
        loop {
            let mut c = UffdioCopy { dst: dst as u64, src: src as u64, len: len as u64, mode: 0, copy: 0 };
            match self.ioctl(UFFDIO_COPY, &mut c) {
                Ok(()) => return Ok(Fill::Installed),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EEXIST) => return Ok(Fill::AlreadyMapped),
                    // EAGAIN: the mm changed under the copy (or it was
                    // partial); nothing half-visible, retry the whole page.
                    Some(libc::EAGAIN) if c.copy <= 0 => continue,
                    _ => return Err(e),
                },
            }
        }
    }

    /// Maps the zero page at `[dst, dst + len)` and wakes the waiters.
    pub fn zeropage(&self, dst: usize, len: usize) -> io::Result<Fill> {
        loop {
            let mut z =
                UffdioZeropage { range: UffdioRange { start: dst as u64, len: len as u64 }, mode: 0, zeropage: 0 };
            match self.ioctl(UFFDIO_ZEROPAGE, &mut z) {
                Ok(()) => return Ok(Fill::Installed),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EEXIST) => return Ok(Fill::AlreadyMapped),
                    Some(libc::EAGAIN) if z.zeropage <= 0 => continue,
                    _ => return Err(e),
                },
            }
        }
    }

    /// Waits up to `timeout_ms` for fault messages and appends the faulting
    /// addresses to `out`. Returns how many were appended (0 on timeout).
    pub fn read_faults(&self, timeout_ms: i32, out: &mut Vec<u64>) -> io::Result<usize> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
        }
        if r == 0 {
            return Ok(0);
        }
        let mut msgs = [UffdMsg::default(); FAULT_BATCH];
        let size = std::mem::size_of_val(&msgs);
        // SAFETY: `msgs` is `size` writable bytes of plain-old-data.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), msgs.as_mut_ptr().cast(), size) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        let got = n as usize / std::mem::size_of::<UffdMsg>();
        let before = out.len();
        out.extend(msgs[..got].iter().filter(|m| m.event == UFFD_EVENT_PAGEFAULT).map(|m| m.pf_address));
        Ok(out.len() - before)
    }
}

fn open_dev(flags: i32) -> io::Result<RawFd> {
    // SAFETY: a NUL-terminated path literal.
    let dev = unsafe { libc::open(c"/dev/userfaultfd".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if dev < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dev` was just opened and is owned here (closed on drop).
    let dev = unsafe { OwnedFd::from_raw_fd(dev) };
    // SAFETY: USERFAULTFD_IOC_NEW takes the new descriptor's flags by value.
    let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW as _, flags) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Sizes and numbers as linux/userfaultfd.h gives them (x86-64 values
    /// printed by a C program including the header).
    #[test]
    fn layouts_match_the_kernel_header() {
        assert_eq!(size_of::<UffdioApi>(), 24);
        assert_eq!(size_of::<UffdioRange>(), 16);
        assert_eq!(size_of::<UffdioRegister>(), 32);
        assert_eq!(size_of::<UffdioCopy>(), 40);
        assert_eq!(size_of::<UffdioZeropage>(), 32);
        assert_eq!(size_of::<UffdMsg>(), 32);
        assert_eq!(UFFDIO_API, 0xC018_AA3F);
        assert_eq!(UFFDIO_REGISTER, 0xC020_AA00);
        assert_eq!(UFFDIO_UNREGISTER, 0x8010_AA01);
        assert_eq!(UFFDIO_WAKE, 0x8010_AA02);
        assert_eq!(UFFDIO_COPY, 0xC028_AA03);
        assert_eq!(UFFDIO_ZEROPAGE, 0xC020_AA04);
        assert_eq!(USERFAULTFD_IOC_NEW, 0xAA00);
    }
}
