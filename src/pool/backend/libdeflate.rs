//! libdeflate (crate `libdeflater`): whole-buffer compression, so there is
//! no stream to reset between pages. Its levels go to 12; zlib's 0..=9 map
//! to the same numbers (1 fastest, 9 zlib's best).

use crate::error::{Error, Result};

pub(crate) struct Deflater(libdeflater::Compressor);

impl Deflater {
    pub(crate) fn new(level: i32) -> Result<Self> {
        let lvl = libdeflater::CompressionLvl::new(level).map_err(|_| Error::InvalidArgument("level must be 0..=9"))?;
        // libdeflater panics if libdeflate_alloc_compressor returns NULL.
        std::panic::catch_unwind(|| Deflater(libdeflater::Compressor::new(lvl))).map_err(|_| Error::OutOfMemory)
    }
}

impl super::PageDeflater for Deflater {
    fn deflate(&mut self, page: &[u8], out: &mut Vec<u8>) -> bool {
        let cap = out.capacity();
        out.resize(cap, 0);
        // libdeflate returns 0 (InsufficientSpace) when the stream does
        // not fit in `out`, i.e. in compress_bound(page).
        match self.0.zlib_compress(page, out) {
            Ok(n) => {
                out.truncate(n);
                true
            }
            Err(_) => false,
        }
    }
}

pub(crate) struct Inflater(std::ptr::NonNull<libdeflate_sys::libdeflate_decompressor>);

// SAFETY: a libdeflate decompressor is plain heap state with no thread
// affinity; it is used by one thread at a time (the worker owning it).
unsafe impl Send for Inflater {}

impl Inflater {
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: no preconditions; returns NULL on allocation failure.
        let p = unsafe { libdeflate_sys::libdeflate_alloc_decompressor() };
        std::ptr::NonNull::new(p).map(Inflater).ok_or(Error::OutOfMemory)
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_decompressor, freed once.
        unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0.as_ptr()) };
    }
}

impl super::PageInflater for Inflater {
    fn inflate(&mut self, input: &[u8], page: &mut [u8]) -> bool {
        let (mut consumed, mut produced) = (0usize, 0usize);
        // SAFETY: the decompressor is live and ours; `input` and `page` are
        // valid for their lengths; the two out-pointers are live locals.
        // libdeflate writes only inside `page[..page.len()]`.
        let r = unsafe {
            libdeflate_sys::libdeflate_zlib_decompress_ex(
                self.0.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                page.as_mut_ptr().cast(),
                page.len(),
                &mut consumed,
                &mut produced,
            )
        };
        r == libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS && consumed == input.len() && produced == page.len()
    }
}
