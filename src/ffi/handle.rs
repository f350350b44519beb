//! One handle layer for every C handle type (rustls-ffi's `Castable`,
//! `try_ref_from_ptr!` and `free_box`, src/ffi.rs there).
//!
//! [`Handle`] says once, per opaque C type, which Rust object a live
//! handle points at and how it is freed; [`try_ref`], [`try_mut`] and
//! [`free`] check and convert a handle the same way for all five types:
//!
//! * NULL is rejected with `EINVAL` ("`<type>` is NULL");
//! * a pointer not aligned for the type is rejected without being read;
//! * the first four bytes of every handle are its type's tag ([`Handle::TAG`],
//!   a different value per type): a handle of another vmig type, or other
//!   memory that does not start with the tag, is rejected with `EINVAL`
//!   ("not a live `<type>`") instead of being used.
//!
//! What the check cannot do: a freed handle's memory may be unmapped or
//! reused, and reading it is undefined behaviour, so use after free is the
//! caller's bug to avoid (the C tests run under ASan, which catches it).
//! `*const` handles give `&` only: [`try_mut`] takes `*mut`.
//!
//! Box-owned handles are a [`Tagged`] value; the ring, which a VMM may lay
//! out in its own memory (`vmig_ring_init`), keeps its tag in its header.

use std::ptr::NonNull;

use crate::error::{Error, Result};

/// An opaque C handle type.
///
/// # Safety
/// For every pointer C may hold as a live handle of this type, the first
/// four bytes hold [`Self::TAG`], written before the handle was returned
/// and unchanged until it is freed; a pointer whose first four bytes hold
/// `TAG` and is aligned to [`Self::ALIGN`] is a live handle for which
/// [`Self::object`] and [`Self::destroy`] are sound. `TAG` differs between
/// the handle types.
pub(crate) unsafe trait Handle {
    /// The Rust object behind a live handle.
    type Object: ?Sized;
    /// Message for a NULL handle.
    const NULL: &'static str;
    /// Message for a pointer that is not a live handle of this type.
    const FOREIGN: &'static str;
    /// First four bytes of a live handle; unique to this type.
    const TAG: u32;
    /// Alignment of every live handle.
    const ALIGN: usize;

    /// The object behind a handle whose tag matched.
    ///
    /// # Safety
    /// `p` is a live handle of this type (its tag was checked).
    unsafe fn object(p: NonNull<u8>) -> Result<NonNull<Self::Object>>;

    /// Frees a live handle.
    ///
    /// # Safety
    /// `p` is a live handle of this type that no other thread uses now or
    /// later.
    unsafe fn destroy(p: NonNull<u8>);
}

/// A Box-owned handle's memory: the tag, then the object.
#[repr(C)]
pub(crate) struct Tagged<T> {
    tag: u32,
    value: T,
}

/// Implements [`Handle`] for an opaque C type whose handles are a leaked
/// `Box<Tagged<$object>>`, and gives it `new_box`.
macro_rules! box_handle {
    ($c_type:ident, $object:ty, $tag:expr) => {
        // SAFETY: handles come only from `new_box` (a leaked
        // Box<Tagged<$object>> whose first field is the tag, repr(C)) and
        // are freed only by `destroy`; the tag is never written again.
        unsafe impl $crate::ffi::handle::Handle for $c_type {
            type Object = $object;
            const NULL: &'static str = concat!(stringify!($c_type), " handle is NULL");
            const FOREIGN: &'static str = concat!("not a live ", stringify!($c_type), " handle");
            const TAG: u32 = $tag;
            const ALIGN: usize = std::mem::align_of::<$crate::ffi::handle::Tagged<$object>>();

            unsafe fn object(p: std::ptr::NonNull<u8>) -> $crate::error::Result<std::ptr::NonNull<$object>> {
                // SAFETY: `p` is a live Box<Tagged<$object>> (contract); the
                // field pointer keeps the box's provenance.
                Ok(unsafe { $crate::ffi::handle::Tagged::<$object>::value_ptr(p) })
            }

            unsafe fn destroy(p: std::ptr::NonNull<u8>) {
                // SAFETY: a live handle is a leaked Box<Tagged<$object>>,
                // freed once, here (contract).
                drop(unsafe { Box::from_raw(p.cast::<$crate::ffi::handle::Tagged<$object>>().as_ptr()) });
            }
        }

        impl $c_type {
            /// Leaks `value` as a new handle of this type.
            pub(crate) fn new_box(value: $object) -> *mut $c_type {
                $crate::ffi::handle::Tagged::new_raw(<$c_type as $crate::ffi::handle::Handle>::TAG, value).cast()
            }
        }
    };
}
pub(crate) use box_handle;

impl<T> Tagged<T> {
    /// Boxes `value` behind `tag` and leaks it.
    pub(crate) fn new_raw(tag: u32, value: T) -> *mut u8 {
        Box::into_raw(Box::new(Tagged { tag, value })).cast()
    }

    /// The object inside a live `Tagged<T>` at `p`.
    ///
    /// # Safety
    /// `p` points at a live `Tagged<T>`.
    pub(crate) unsafe fn value_ptr(p: NonNull<u8>) -> NonNull<T> {
        let t = p.cast::<Tagged<T>>().as_ptr();
        // SAFETY: `t` is a live Tagged<T> (contract); addr_of_mut! takes the
        // field's address without creating a reference.
        unsafe { NonNull::new_unchecked(std::ptr::addr_of_mut!((*t).value)) }
    }
}

/// The one check every entry point runs on a handle: non-NULL, aligned for
/// `H`, and tagged as `H`.
///
/// # Safety
/// `p` is NULL or points at least four readable bytes (a handle of some
/// vmig type, or other memory the caller owns), not freed.
unsafe fn check<H: Handle>(p: *const H) -> Result<NonNull<u8>> {
    // `let else`, not `ok_or`: an `Error` built eagerly is dropped (a call
    // to its drop glue) on every successful check.
    let Some(p) = NonNull::new(p.cast::<u8>().cast_mut()) else {
        return Err(Error::InvalidArgument(H::NULL));
    };
    if p.as_ptr() as usize % H::ALIGN != 0 {
        return Err(Error::InvalidArgument(H::FOREIGN));
    }
    // SAFETY: four readable bytes (contract), aligned for u32 (every ALIGN
    // is a multiple of 4: the tag is a u32 at offset 0). A live handle's tag
    // is never written while it is live, so this read races with nothing.
    let tag = unsafe { p.cast::<u32>().as_ptr().read() };
    if tag != H::TAG {
        return Err(Error::InvalidArgument(H::FOREIGN));
    }
    Ok(p)
}

/// A shared reference to the object behind `p`, valid for one call.
///
/// # Safety
/// As [`check`]; a live handle stays live for the returned lifetime, and no
/// `&mut` to the object exists meanwhile (each type's thread-safety rule).
pub(crate) unsafe fn try_ref<'a, H: Handle>(p: *const H) -> Result<&'a H::Object> {
    // SAFETY: per this function's contract.
    let p = unsafe { check(p)? };
    // SAFETY: a checked live handle; shared access per the contract.
    Ok(unsafe { H::object(p)?.as_ref() })
}

/// An exclusive reference to the object behind `p`, valid for one call.
///
/// # Safety
/// As [`check`]; a live handle stays live for the returned lifetime, and
/// the caller's thread is the only one using it (the handle type's
/// single-thread rule).
pub(crate) unsafe fn try_mut<'a, H: Handle>(p: *mut H) -> Result<&'a mut H::Object> {
    // SAFETY: per this function's contract.
    let p = unsafe { check(p.cast_const())? };
    // SAFETY: a checked live handle; exclusive access per the contract.
    Ok(unsafe { H::object(p)?.as_mut() })
}

/// Frees the handle `p`: NULL is a no-op; a pointer that fails the check
/// is left alone and reported (`Err`), never freed.
///
/// # Safety
/// As [`check`]; no other thread uses the handle during or after the call.
pub(crate) unsafe fn free<H: Handle>(p: *mut H) -> Result<()> {
    if p.is_null() {
        return Ok(());
    }
    // SAFETY: per this function's contract.
    let p = unsafe { check(p.cast_const())? };
    // SAFETY: a checked live handle, exclusively ours (contract).
    unsafe { H::destroy(p) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Alpha;
    struct Beta;
    box_handle!(Alpha, u64, 0x7465_7374);
    box_handle!(Beta, u64, 0x7465_7375);

    #[test]
    fn null_foreign_and_misaligned_rejected() {
        // SAFETY: NULL is rejected before any read.
        assert_eq!(unsafe { try_ref::<Alpha>(std::ptr::null()) }.unwrap_err(), Error::InvalidArgument(Alpha::NULL));
        let a = Alpha::new_box(7);
        let b = Beta::new_box(9);
        // SAFETY: live handles, used by this thread only.
        unsafe {
            assert_eq!(*try_ref(a.cast_const()).unwrap(), 7);
            *try_mut(b).unwrap() += 1;
            assert_eq!(*try_ref(b.cast_const()).unwrap(), 10);
            // A live handle of another type: its tag differs.
            assert_eq!(try_ref::<Alpha>(b.cast()).unwrap_err(), Error::InvalidArgument(Alpha::FOREIGN));
            assert_eq!(free::<Beta>(a.cast()).unwrap_err(), Error::InvalidArgument(Beta::FOREIGN));
            // Misaligned: rejected without reading.
            assert!(try_ref::<Alpha>(a.cast::<u8>().add(1).cast()).is_err());
            free(a).unwrap();
            free(b).unwrap();
            free::<Alpha>(std::ptr::null_mut()).unwrap();
        }
        // Memory that is not a handle at all.
        let other = [0u64; 2];
        // SAFETY: readable, aligned memory of this test.
        assert!(unsafe { try_ref::<Alpha>(other.as_ptr().cast()) }.is_err());
    }
}
