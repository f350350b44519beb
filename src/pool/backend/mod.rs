//! Deflate backends: the compressor a worker runs on each page and the
//! inflater a decompression worker runs on each stream.
//!
//! Every backend emits one complete zlib stream (RFC 1950) per page, the
//! format QEMU 7.2's receiver inflates with `inflateReset()` + `inflate()`
//! (migration/ram.c, `qemu_uncompress_data`), and every backend's inflater
//! accepts any such stream; `tests/pool_backends.rs` proves both directions
//! against the system zlib for each backend compiled in. Which one is the
//! default, and why: docs/pool.md, "Backends".

mod zlib_rs;
#[cfg(feature = "libdeflate")]
mod libdeflate;
#[cfg(feature = "system-zlib")]
mod zlib;

use crate::error::{Error, Result};

/// A deflate implementation (C: `vmig_pool_backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// zlib-rs (Rust; zlib-ng's algorithms). Level 1 is zlib-ng's
    /// `deflate_quick`: fast, static Huffman codes only. Always built.
    ZlibRs,
    /// libdeflate (crate `libdeflater`, C built by cargo; feature
    /// `libdeflate`): whole-buffer, better ratio than zlib-rs at level 1,
    /// and the fastest inflater, though laxer than zlib on corrupt input
    /// ([`Backend::default_inflater`]).
    Libdeflate,
    /// The system zlib (`libz.so`, through `libz-sys`; feature
    /// `system-zlib`): the very bytes stock QEMU sends.
    Zlib,
}

impl Backend {
    /// Every backend, in C enum order (C values 1, 2, 3; 0 is "default").
    pub const ALL: [Backend; 3] = [Backend::ZlibRs, Backend::Libdeflate, Backend::Zlib];

    /// The C enum value of `backend` (`None`: 0, the default).
    pub fn to_c(backend: Option<Backend>) -> u32 {
        match backend {
            None => 0,
            Some(b) => Backend::ALL.iter().position(|&x| x == b).map_or(0, |i| i as u32 + 1),
        }
    }

    /// From the C enum value (0: `None`, the default); `InvalidArgument`
    /// when out of range.
    pub fn from_c(v: u32) -> Result<Option<Backend>> {
        match v {
            0 => Ok(None),
            _ => Backend::ALL
                .get(v as usize - 1)
                .copied()
                .map(Some)
                .ok_or(Error::InvalidArgument("backend is not a vmig_pool_backend")),
        }
    }

    /// By [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether this build has it (its cargo feature is on).
    pub fn compiled_in(self) -> bool {
        match self {
            Backend::ZlibRs => true,
            Backend::Libdeflate => cfg!(feature = "libdeflate"),
            Backend::Zlib => cfg!(feature = "system-zlib"),
        }
    }

    /// The name used in docs, CLI options and bench output.
    pub fn name(self) -> &'static str {
        match self {
            Backend::ZlibRs => "zlib-rs",
            Backend::Libdeflate => "libdeflate",
            Backend::Zlib => "zlib",
        }
    }

    /// `Unsupported` (EOPNOTSUPP) unless [`compiled_in`](Self::compiled_in).
    pub fn check(self) -> Result<()> {
        if self.compiled_in() {
            Ok(())
        } else {
            Err(match self {
                Backend::Libdeflate => Error::Unsupported("backend libdeflate (cargo feature `libdeflate`)"),
                _ => Error::Unsupported("backend zlib (cargo feature `system-zlib`)"),
            })
        }
    }

    /// The decompression pool's default inflater: the fastest one that
    /// accepts exactly the streams the system zlib accepts. That is
    /// zlib-rs: libdeflate inflates faster but also accepts some corrupt
    /// streams zlib rejects (incomplete Huffman codes; found by
    /// tests/pool_fuzz.rs). Measured in docs/pool.md, "Backends".
    pub fn default_inflater() -> Backend {
        Backend::ZlibRs
    }
}

/// A per-worker page compressor.
pub(crate) trait PageDeflater: Send {
    /// Compresses `page` into `out` (empty on entry, capacity at least
    /// `compress_bound(page.len())`) as one complete zlib stream. `false`
    /// when the stream would not fit in that capacity; `out` is then junk.
    fn deflate(&mut self, page: &[u8], out: &mut Vec<u8>) -> bool;
}

/// A per-worker page inflater.
pub(crate) trait PageInflater: Send {
    /// Inflates `input` into `page`; `true` only when `input` is exactly
    /// one complete zlib stream (no trailing bytes) of exactly
    /// `page.len()` bytes. On `false`, `page` holds junk.
    fn inflate(&mut self, input: &[u8], page: &mut [u8]) -> bool;
}

/// A compressor of `backend` at zlib `level` (0..=9). `OutOfMemory` when
/// the backend cannot allocate its state; `Unsupported` when not built.
pub(crate) fn deflater(backend: Backend, level: i32) -> Result<Box<dyn PageDeflater>> {
    backend.check()?;
    Ok(match backend {
        Backend::ZlibRs => Box::new(zlib_rs::Deflater::new(level)?),
        #[cfg(feature = "libdeflate")]
        Backend::Libdeflate => Box::new(libdeflate::Deflater::new(level)?),
        #[cfg(feature = "system-zlib")]
        Backend::Zlib => Box::new(zlib::Deflater::new(level)?),
        #[allow(unreachable_patterns)]
        _ => unreachable!("checked above"),
    })
}

/// An inflater of `backend`; errors as [`deflater`].
pub(crate) fn inflater(backend: Backend) -> Result<Box<dyn PageInflater>> {
    backend.check()?;
    Ok(match backend {
        Backend::ZlibRs => Box::new(zlib_rs::Inflater::new()?),
        #[cfg(feature = "libdeflate")]
        Backend::Libdeflate => Box::new(libdeflate::Inflater::new()?),
        #[cfg(feature = "system-zlib")]
        Backend::Zlib => Box::new(zlib::Inflater::new()?),
        #[allow(unreachable_patterns)]
        _ => unreachable!("checked above"),
    })
}

/// One page compressor of a backend, as a pool worker runs it: one complete
/// zlib stream per page, at most `compress_bound(page.len())` bytes
/// (re-emitted as stored blocks when the backend's stream would be longer).
/// Public so that benchmarks and vmig-sim measure the very code the
/// workers run.
pub struct PageCompressor {
    z: Box<dyn PageDeflater>,
    /// zlib-rs level 0 (stored blocks), for pages the backend would expand
    /// past `compressBound(page_size)`.
    stored: flate2::Compress,
    backend: Backend,
}

impl std::fmt::Debug for PageCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCompressor").field("backend", &self.backend).finish()
    }
}

impl PageCompressor {
    /// A compressor of `backend` at zlib `level` 0..=9.
    ///
    /// ```
    /// use vmig::pool::{compress_bound, Backend, PageCompressor};
    /// let mut c = PageCompressor::new(Backend::ZlibRs, 1).unwrap();
    /// let mut out = Vec::with_capacity(compress_bound(4096));
    /// c.compress(&[7u8; 4096], &mut out).unwrap();
    /// assert!(out.len() < 100);
    /// ```
    pub fn new(backend: Backend, level: i32) -> Result<PageCompressor> {
        if !(0..=9).contains(&level) {
            return Err(Error::InvalidArgument("level must be 0..=9"));
        }
        let z = deflater(backend, level)?;
        // flate2 panics when zlib-rs reports Z_MEM_ERROR; make that ENOMEM.
        let stored = std::panic::catch_unwind(|| flate2::Compress::new(flate2::Compression::new(0), true))
            .map_err(|_| Error::OutOfMemory)?;
        Ok(PageCompressor { z, stored, backend })
    }

    /// Compresses `page` into `out`, replacing its contents. `out` must have
    /// a capacity of at least `compress_bound(page.len())`
    /// (`InvalidArgument` otherwise); `Internal` if even stored blocks did
    /// not fit (a bug).
    pub fn compress(&mut self, page: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if out.capacity() < super::compress_bound(page.len() as u32) {
            return Err(Error::InvalidArgument("out has less capacity than compress_bound(page)"));
        }
        out.clear();
        if self.z.deflate(page, out) {
            return Ok(());
        }
        // The stream did not fit in compressBound(page_size). System zlib
        // never gets here (it falls back to stored blocks itself), but
        // zlib-rs level 1 is zlib-ng's deflate_quick, whose static Huffman
        // codes can expand random data by up to 1/8. QEMU's receiver rejects
        // anything longer than compressBound(TARGET_PAGE_SIZE) (ram_load),
        // so re-emit the page as stored blocks, which always fit.
        out.clear();
        self.stored.reset();
        match self.stored.compress_vec(page, out, flate2::FlushCompress::Finish) {
            Ok(flate2::Status::StreamEnd) => Ok(()),
            _ => {
                out.clear();
                Err(Error::Internal("stored blocks did not fit compressBound"))
            }
        }
    }
}

/// One page inflater of a backend, as a decompression worker runs it.
pub struct PageDecompressor {
    z: Box<dyn PageInflater>,
    backend: Backend,
}

impl std::fmt::Debug for PageDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageDecompressor").field("backend", &self.backend).finish()
    }
}

impl PageDecompressor {
    /// An inflater of `backend`.
    pub fn new(backend: Backend) -> Result<PageDecompressor> {
        Ok(PageDecompressor { z: inflater(backend)?, backend })
    }

    /// Inflates `input` into `page`: `true` only when `input` is exactly
    /// one complete zlib stream of exactly `page.len()` bytes (then `page`
    /// holds them); on `false`, `page` holds junk.
    ///
    /// ```
    /// use vmig::pool::{compress_bound, Backend, PageCompressor, PageDecompressor};
    /// let mut out = Vec::with_capacity(compress_bound(4096));
    /// PageCompressor::new(Backend::ZlibRs, 1).unwrap().compress(&[7u8; 4096], &mut out).unwrap();
    /// let mut page = vec![0u8; 4096];
    /// assert!(PageDecompressor::new(Backend::ZlibRs).unwrap().inflate(&out, &mut page));
    /// assert_eq!(page, vec![7u8; 4096]);
    /// ```
    pub fn inflate(&mut self, input: &[u8], page: &mut [u8]) -> bool {
        self.z.inflate(input, page)
    }
}
