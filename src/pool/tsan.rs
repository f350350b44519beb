//! Happens-before annotations for ThreadSanitizer.
//!
//! libvmig is built without `-fsanitize=thread` (stable Rust cannot), so when
//! a TSan-instrumented C program (scripts/c-tests.sh tsan) drives a pool,
//! TSan sees the workers' intercepted `memcpy`s and the allocations but not
//! the ring's Release/Acquire pairs, and would report every hand-off as a
//! race. At pool creation we look up TSan's public annotation entry points
//! (`__tsan_release`/`__tsan_acquire`, as used by Go and folly); they exist
//! only when the TSan runtime is loaded. Without it each hook is one
//! predictable branch on `None`.

use std::ffi::c_void;

type Hook = unsafe extern "C" fn(*mut c_void);

/// The two annotation functions, when running under TSan.
#[derive(Clone, Copy, Default)]
pub(crate) struct Tsan {
    release: Option<Hook>,
    acquire: Option<Hook>,
}

impl Tsan {
    /// Resolves the hooks (once per pool, never on the hot path).
    pub fn detect() -> Tsan {
        #[cfg(any(vmig_loom, miri))]
        {
            Tsan::default()
        }
        #[cfg(not(any(vmig_loom, miri)))]
        {
            let find = |name: &std::ffi::CStr| -> Option<Hook> {
                // SAFETY: dlsym with RTLD_DEFAULT only searches loaded objects.
                let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
                // SAFETY: when present, these symbols are TSan's
                // `void __tsan_release(void *)` / `__tsan_acquire(void *)`.
                (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, Hook>(p) })
            };
            match (find(c"__tsan_release"), find(c"__tsan_acquire")) {
                (Some(r), Some(a)) => Tsan { release: Some(r), acquire: Some(a) },
                _ => Tsan::default(),
            }
        }
    }

    /// Tells TSan that what this thread did so far happens before a later
    /// `acquire` of `addr` (call before publishing `addr` on a ring).
    #[inline]
    pub fn release<T>(&self, addr: *const T) {
        if let Some(f) = self.release {
            // SAFETY: TSan only uses the address as a key.
            unsafe { f(addr.cast_mut().cast()) }
        }
    }

    /// Pairs with `release` of `addr` (call after taking `addr` off a ring).
    #[inline]
    pub fn acquire<T>(&self, addr: *const T) {
        if let Some(f) = self.acquire {
            // SAFETY: TSan only uses the address as a key.
            unsafe { f(addr.cast_mut().cast()) }
        }
    }
}
