//! The system zlib through `libz-sys`: the library stock QEMU links, called
//! exactly as QEMU 7.2 does (`deflateInit(level)`, then `deflateReset()` +
//! `deflate(Z_FINISH)` per page; `inflateInit()`, then `inflateReset()` +
//! `inflate()` per stream), so its streams are byte for byte what a stock
//! QEMU sends.
//!
//! flate2's own zlib backend cannot be built next to its zlib-rs backend
//! (one flate2 build has one backend), hence `libz-sys` directly. Its
//! symbols cannot clash with zlib-rs's: flate2 calls zlib-rs as a Rust
//! crate, which exports no C symbols.

use std::ffi::c_int;
use std::mem::size_of;

use libz_sys as z;

use crate::error::{Error, Result};

/// zlib's allocator hooks (`z_stream` has non-nullable function pointers
/// in libz-sys, so Z_NULL's "use malloc" is spelled out).
unsafe extern "C" fn zalloc(_: z::voidpf, items: z::uInt, size: z::uInt) -> z::voidpf {
    // SAFETY: calloc has no preconditions; zlib handles NULL (Z_MEM_ERROR).
    unsafe { libc::calloc(items as usize, size as usize) }
}

unsafe extern "C" fn zfree(_: z::voidpf, p: z::voidpf) {
    // SAFETY: `p` came from `zalloc` (calloc), freed once by zlib.
    unsafe { libc::free(p) }
}

/// A boxed `z_stream`: zlib keeps a pointer back to it in its state and
/// checks it, so the stream must not move after `*Init`.
fn new_stream() -> Box<z::z_stream> {
    Box::new(z::z_stream {
        next_in: std::ptr::null_mut(),
        avail_in: 0,
        total_in: 0,
        next_out: std::ptr::null_mut(),
        avail_out: 0,
        total_out: 0,
        msg: std::ptr::null_mut(),
        state: std::ptr::null_mut(),
        zalloc,
        zfree,
        opaque: std::ptr::null_mut(),
        data_type: 0,
        adler: 0,
        reserved: 0,
    })
}

fn init_error(rc: c_int) -> Error {
    match rc {
        z::Z_MEM_ERROR => Error::OutOfMemory,
        z::Z_STREAM_ERROR => Error::InvalidArgument("level must be 0..=9"),
        _ => Error::Internal("zlib: library version mismatch"),
    }
}

pub(crate) struct Deflater(Box<z::z_stream>);

// SAFETY: a z_stream is plain heap state with no thread affinity; it is
// used by one thread at a time (the worker owning it).
unsafe impl Send for Deflater {}

impl Deflater {
    pub(crate) fn new(level: i32) -> Result<Self> {
        let mut s = new_stream();
        // SAFETY: `s` is a fresh, boxed z_stream with allocator hooks; the
        // version string and size are the ones zlib checks the ABI with.
        let rc = unsafe { z::deflateInit_(&mut *s, level, z::zlibVersion(), size_of::<z::z_stream>() as c_int) };
        if rc != z::Z_OK {
            return Err(init_error(rc));
        }
        Ok(Deflater(s))
    }
}

impl Drop for Deflater {
    fn drop(&mut self) {
        // SAFETY: initialised by deflateInit_, ended once.
        unsafe { z::deflateEnd(&mut *self.0) };
    }
}

impl super::PageDeflater for Deflater {
    fn deflate(&mut self, page: &[u8], out: &mut Vec<u8>) -> bool {
        let s = &mut *self.0;
        let cap = out.capacity().min(z::uInt::MAX as usize);
        // SAFETY: `s` is initialised. zlib reads `page` (never writes it:
        // next_in is only *mut in the C prototype) and writes at most
        // `cap` bytes at `out`'s spare capacity, then reports how many.
        unsafe {
            if z::deflateReset(s) != z::Z_OK {
                return false;
            }
            s.next_in = page.as_ptr().cast_mut();
            s.avail_in = page.len() as z::uInt;
            s.next_out = out.as_mut_ptr();
            s.avail_out = cap as z::uInt;
            let rc = z::deflate(s, z::Z_FINISH);
            let n = cap - s.avail_out as usize;
            s.next_in = std::ptr::null_mut();
            s.next_out = std::ptr::null_mut();
            if rc != z::Z_STREAM_END {
                return false;
            }
            // zlib initialised these `n` bytes.
            out.set_len(n);
        }
        true
    }
}

pub(crate) struct Inflater(Box<z::z_stream>);

// SAFETY: as for `Deflater`.
unsafe impl Send for Inflater {}

impl Inflater {
    pub(crate) fn new() -> Result<Self> {
        let mut s = new_stream();
        // SAFETY: as in `Deflater::new`.
        let rc = unsafe { z::inflateInit_(&mut *s, z::zlibVersion(), size_of::<z::z_stream>() as c_int) };
        if rc != z::Z_OK {
            return Err(init_error(rc));
        }
        Ok(Inflater(s))
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: initialised by inflateInit_, ended once.
        unsafe { z::inflateEnd(&mut *self.0) };
    }
}

impl super::PageInflater for Inflater {
    fn inflate(&mut self, input: &[u8], page: &mut [u8]) -> bool {
        let s = &mut *self.0;
        if input.len() > z::uInt::MAX as usize || page.len() > z::uInt::MAX as usize {
            return false;
        }
        // SAFETY: `s` is initialised; zlib reads `input` and writes at most
        // `page.len()` bytes into `page`.
        unsafe {
            if z::inflateReset(s) != z::Z_OK {
                return false;
            }
            s.next_in = input.as_ptr().cast_mut();
            s.avail_in = input.len() as z::uInt;
            s.next_out = page.as_mut_ptr();
            s.avail_out = page.len() as z::uInt;
            let rc = z::inflate(s, z::Z_FINISH);
            let ok = rc == z::Z_STREAM_END && s.avail_in == 0 && s.avail_out == 0;
            s.next_in = std::ptr::null_mut();
            s.next_out = std::ptr::null_mut();
            ok
        }
    }
}
