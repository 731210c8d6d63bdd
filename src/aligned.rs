//! Heap memory aligned for direct I/O. The only place that allocates raw memory.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// A zero-initialised, fixed-capacity byte buffer whose address is aligned to `align`
/// (a power of two), as `O_DIRECT` requires of the memory handed to the kernel.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like a Box<[u8]>); sharing `&AlignedBuf`
// only gives out `&[u8]`, so it is as thread-safe as a Box<[u8]>.
unsafe impl Send for AlignedBuf {}
// SAFETY: see above; `&AlignedBuf` permits reads only.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of `capacity` zero bytes (at least one byte is allocated) aligned to `align`.
    ///
    /// Panics only if `align` is not a power of two or the size overflows, which callers
    /// rule out by validating the configuration first.
    pub fn zeroed(capacity: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(capacity.max(1), align.max(1))
            .expect("aligned buffer: alignment must be a power of two");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, layout }
    }

    /// Bytes this buffer holds.
    pub fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// The alignment of the first byte.
    pub fn align(&self) -> usize {
        self.layout.align()
    }

    /// The whole buffer.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for `size` initialised (zeroed at allocation) bytes for as
        // long as `self` lives, and `&self` forbids concurrent mutation through safe code.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// The whole buffer, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl AlignedBuf {
    /// The address of the first byte.
    #[cfg(test)]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated with exactly this layout and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("capacity", &self.capacity())
            .field("align", &self.align())
            .finish()
    }
}

/// `value` rounded up to a multiple of `align` (a power of two).
pub fn align_up(value: usize, align: usize) -> usize {
    (value + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for align in [1, 512, 4096] {
            let mut b = AlignedBuf::zeroed(8192, align);
            assert_eq!(b.as_slice().as_ptr() as usize % align, 0);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice()[8191] = 7;
            assert_eq!(b.as_slice()[8191], 7);
        }
        assert_eq!(AlignedBuf::zeroed(0, 64).capacity(), 1);
        assert_eq!(align_up(1, 512), 512);
        assert_eq!(align_up(4096, 4096), 4096);
    }
}
