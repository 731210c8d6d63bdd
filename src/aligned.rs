//! Heap memory aligned for direct I/O. With `huge.rs`, the only place that allocates raw
//! memory.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;

use crate::error::os_msg;
use crate::huge::{self, Slot, REGIONS};

/// A zero-initialised, fixed-capacity byte buffer whose address is aligned to `align`
/// (a power of two), as `O_DIRECT` requires of the memory handed to the kernel.
///
/// The handles allocate these for their own buffers; it is public so that code writing
/// through an `O_DIRECT` handle (or reading with `read`) can use the same allocation.
///
/// ```
/// use writebehind::AlignedBuf;
/// let mut b = AlignedBuf::try_zeroed(8192, 4096).unwrap();
/// assert_eq!(b.as_slice().as_ptr() as usize % 4096, 0);
/// b.as_mut_slice()[0] = 1;
/// assert_eq!(b.capacity(), 8192);
/// ```
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Where the bytes live when they are a huge-page slot (`huge.rs`); `None`: the
    /// global allocator's.
    slot: Option<Slot>,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like a Box<[u8]>); sharing `&AlignedBuf`
// only gives out `&[u8]`, so it is as thread-safe as a Box<[u8]>.
unsafe impl Send for AlignedBuf {}
// SAFETY: see above; `&AlignedBuf` permits reads only.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of `capacity` zero bytes aligned to `align` (0 counts as 1). A capacity of
    /// 0 allocates nothing. A capacity that is a power of two from 512 KiB to 2 MiB (and
    /// at least `align`) is a slot of a 2 MiB mapping advised for transparent huge pages,
    /// shared with other buffers of that capacity; smaller and other sizes come from the
    /// global allocator.
    ///
    /// # Errors
    ///
    /// `EINVAL` when `align` is not a power of two; `ENOMEM` when the size overflows
    /// `isize` or the allocator has no memory for it; `mmap`'s errno when a huge-page
    /// mapping cannot be made. Never aborts.
    pub fn try_zeroed(capacity: usize, align: usize) -> io::Result<Self> {
        let align = align.max(1);
        if !align.is_power_of_two() {
            return Err(os_msg(
                libc::EINVAL,
                format!("alignment {align} is not a power of two"),
            ));
        }
        let no_mem = || {
            os_msg(
                libc::ENOMEM,
                format!("cannot allocate a {capacity}-byte buffer"),
            )
        };
        let layout = Layout::from_size_align(capacity, align).map_err(|_| no_mem())?;
        if capacity == 0 {
            return Ok(AlignedBuf::empty_aligned(layout));
        }
        if huge::fits(capacity, align) {
            // A slot is aligned to its length, which is at least `align`.
            let slot = REGIONS.alloc(capacity)?;
            return Ok(AlignedBuf {
                ptr: slot.ptr(),
                layout,
                slot: Some(slot),
            });
        }
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(no_mem)?;
        Ok(AlignedBuf {
            ptr,
            layout,
            slot: None,
        })
    }

    /// A buffer of no bytes, which allocates nothing.
    pub(crate) fn empty() -> Self {
        AlignedBuf::empty_aligned(Layout::new::<()>())
    }

    /// A dangling (never dereferenced for any byte) pointer aligned to `layout.align()`.
    fn empty_aligned(layout: Layout) -> Self {
        debug_assert_eq!(layout.size(), 0);
        let ptr = std::ptr::without_provenance_mut::<u8>(layout.align());
        AlignedBuf {
            ptr: NonNull::new(ptr).expect("an alignment is never 0"),
            layout,
            slot: None,
        }
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
        // SAFETY: ptr is non-null, aligned and valid for `size` initialised (zeroed at
        // allocation; no bytes when size is 0) bytes for as long as `self` lives, and `&self` forbids concurrent mutation through safe code.
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

    /// The first `len` bytes, without making a reference to the rest: another thread may
    /// be writing past `len` (see `PoolBuf::append`).
    pub(crate) fn prefix(&self, len: usize) -> &[u8] {
        assert!(len <= self.capacity());
        // SAFETY: as in as_slice, for the first `len` bytes only. The caller guarantees
        // those are not written while the returned slice lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), len) }
    }

    /// Copies `data` to `[at, at + data.len())` through a shared reference.
    ///
    /// # Safety
    ///
    /// No reference to those bytes may exist (none from `as_slice`, `prefix` or
    /// `as_mut_slice`), and nobody else may read or write them, until this returns.
    pub(crate) unsafe fn write_at_shared(&self, at: usize, data: &[u8]) {
        assert!(at + data.len() <= self.capacity());
        // SAFETY: in bounds (checked above); the caller guarantees exclusive access to
        // the range. The heap allocation is not part of `self`, so writing through the
        // pointer it stores does not mutate behind the `&self`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(at), data.len())
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // A slot goes back to its region when `self.slot` drops.
        if self.layout.size() > 0 && self.slot.is_none() {
            // SAFETY: ptr was allocated with exactly this layout and is freed once.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
        }
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
pub(crate) fn align_up(value: usize, align: usize) -> usize {
    (value + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for align in [1, 512, 4096] {
            let mut b = AlignedBuf::try_zeroed(8192, align).unwrap();
            assert_eq!(b.as_slice().as_ptr() as usize % align, 0);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice()[8191] = 7;
            assert_eq!(b.as_slice()[8191], 7);
        }
        let empty = AlignedBuf::try_zeroed(0, 64).unwrap();
        assert_eq!((empty.capacity(), empty.as_slice().len()), (0, 0));
        assert_eq!(empty.as_slice().as_ptr() as usize % 64, 0);
        let errno = |e: io::Error| crate::errno(&e);
        assert_eq!(
            errno(AlignedBuf::try_zeroed(1, 3).unwrap_err()),
            Some(libc::EINVAL)
        );
        assert_eq!(
            errno(AlignedBuf::try_zeroed(usize::MAX - 10, 64).unwrap_err()),
            Some(libc::ENOMEM)
        );
        assert_eq!(align_up(1, 512), 512);
        let mut large = AlignedBuf::try_zeroed(1 << 20, 4096).unwrap();
        assert!(large.slot.is_some(), "1 MiB comes from a huge-page region");
        assert_eq!(large.as_slice().as_ptr() as usize % (1 << 20), 0);
        assert!(large.as_slice().iter().all(|&x| x == 0));
        large.as_mut_slice()[(1 << 20) - 1] = 9;
        assert_eq!(large.as_slice()[(1 << 20) - 1], 9);
        assert_eq!(align_up(4096, 4096), 4096);
    }
}
