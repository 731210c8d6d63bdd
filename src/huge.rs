//! Large buffers on transparent huge pages.
//!
//! Every 4 KiB page a writer's copy enters costs a TLB miss, which in a virtual machine
//! walks two page tables, and every page of a direct write's buffers is pinned one by
//! one. On 2 MiB pages `seq --direct` ran 1.8 to 2.2 times as fast on the project's
//! machine (docs/benchmarks.md, "Huge pages for chunk buffers"). So a buffer of
//! [`fits`] capacity is a slot of a 2 MiB mapping aligned to 2 MiB and advised
//! `MADV_HUGEPAGE`; the mapping holds `2 MiB / capacity` equal slots and is unmapped when
//! its last slot is freed. Whether the kernel backs it with a huge page is its choice
//! (`transparent_hugepage/enabled`): without one the slots work as ordinary pages.
//!
//! Only capacities of 512 KiB and more qualify: a mapping with one slot in use still
//! holds 2 MiB, so small buffers scattered over many mappings could hold many times
//! their size.

use std::io;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::os_msg;

/// Bytes of one mapping, the x86-64 and aarch64 (4 KiB granule) huge page size.
pub(crate) const REGION: usize = 2 << 20;

/// Whether buffers of `capacity` bytes aligned to `align` come from huge-page regions.
pub(crate) fn fits(capacity: usize, align: usize) -> bool {
    capacity.is_power_of_two() && (512 << 10..=REGION).contains(&capacity) && align <= capacity
}

/// One 2 MiB mapping cut into equal slots.
struct Region {
    base: NonNull<u8>,
    slot_len: usize,
    /// Indexes of the slots nobody holds. Locked after [`Regions::partial`].
    free: Mutex<Vec<usize>>,
}

// SAFETY: a Region owns its mapping (like a Box<[u8]>); the bytes of a slot are reached
// only through the one `Slot` that holds it.
unsafe impl Send for Region {}
// SAFETY: as above; shared access touches only the Mutex.
unsafe impl Sync for Region {}

impl Region {
    /// Maps a zeroed region of `REGION / slot_len` slots, all free.
    fn map(slot_len: usize) -> io::Result<Region> {
        // Twice the size, then the unaligned head and tail go back: what stays is 2 MiB
        // aligned to 2 MiB, the only shape a huge page can back.
        // SAFETY: an anonymous private mapping at an address of the kernel's choice
        // touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * REGION,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            let code = e.raw_os_error().unwrap_or(libc::ENOMEM);
            return Err(os_msg(
                code,
                format!("cannot map a 2 MiB buffer region: {e}"),
            ));
        }
        let start = raw as usize;
        let base = start.next_multiple_of(REGION);
        let head = base - start;
        let tail = REGION - head;
        // SAFETY: both ranges lie inside the mapping just made and outside
        // `[base, base + REGION)`; nothing refers to them.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((base + REGION) as *mut libc::c_void, tail);
            }
        }
        // SAFETY: advice on our own mapping; it changes no content. It fails only where
        // the kernel has no transparent huge pages: then ordinary pages serve.
        if unsafe { libc::madvise(base as *mut libc::c_void, REGION, libc::MADV_HUGEPAGE) } != 0 {
            log::debug!(
                "writebehind: MADV_HUGEPAGE refused ({}); large buffers use small pages",
                io::Error::last_os_error()
            );
        }
        let slots = REGION / slot_len;
        let region = Region {
            base: NonNull::new(base as *mut u8).expect("mmap never returns address 0 here"),
            slot_len,
            free: Mutex::new((0..slots).rev().collect()),
        };
        Ok(region)
    }

    fn slots(&self) -> usize {
        REGION / self.slot_len
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `map` and is unmapped once; every slot is free
        // (a `Slot` holds its region alive), so no reference into it remains.
        unsafe { libc::munmap(self.base.as_ptr().cast(), REGION) };
    }
}

/// A slot of a region, held by one buffer.
pub(crate) struct Slot {
    region: Arc<Region>,
    index: usize,
    regions: &'static Regions,
}

impl Slot {
    /// The first byte of the slot, aligned to its length.
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        // SAFETY: `index < slots`, so the offset stays inside the mapping.
        unsafe { self.region.base.add(self.index * self.region.slot_len) }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.regions.give_back(&self.region, self.index);
    }
}

/// The regions with free slots, by slot length.
pub(crate) struct Regions {
    partial: Mutex<Vec<Arc<Region>>>,
}

/// The regions every [`AlignedBuf`](crate::AlignedBuf) of a [`fits`] capacity comes from.
pub(crate) static REGIONS: Regions = Regions::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Regions {
    pub(crate) const fn new() -> Regions {
        Regions {
            partial: Mutex::new(Vec::new()),
        }
    }

    /// A zeroed slot of `len` bytes ([`fits`]): a free one of a partly used region, else
    /// the first of a new region.
    pub(crate) fn alloc(&'static self, len: usize) -> io::Result<Slot> {
        debug_assert!(fits(len, 1));
        let mut partial = lock(&self.partial);
        if let Some(pos) = partial.iter().position(|r| r.slot_len == len) {
            let (index, full) = {
                let mut free = lock(&partial[pos].free);
                let index = free.pop().expect("a partial region has a free slot");
                (index, free.is_empty())
            };
            let region = if full {
                partial.swap_remove(pos)
            } else {
                Arc::clone(&partial[pos])
            };
            drop(partial);
            let slot = Slot {
                region,
                index,
                regions: self,
            };
            // SAFETY: the slot is ours alone (popped from the free list) and lies inside
            // the mapping; it held an earlier buffer's bytes.
            unsafe { std::ptr::write_bytes(slot.ptr().as_ptr(), 0, len) };
            return Ok(slot);
        }
        let region = Arc::new(Region::map(len)?);
        let index = lock(&region.free)
            .pop()
            .expect("a new region has free slots");
        if region.slots() > 1 {
            partial.push(Arc::clone(&region));
        }
        Ok(Slot {
            region,
            index,
            regions: self,
        })
    }

    /// Returns slot `index` of `region`: the region becomes partial again, or, with every
    /// slot free, leaves the list (and is unmapped with the last `Arc`, the caller's).
    fn give_back(&self, region: &Arc<Region>, index: usize) {
        let mut partial = lock(&self.partial);
        let free_now = {
            let mut free = lock(&region.free);
            debug_assert!(!free.contains(&index), "slot {index} freed twice");
            free.push(index);
            debug_assert!(free.len() <= region.slots());
            free.len()
        };
        if free_now == region.slots() {
            partial.retain(|r| !Arc::ptr_eq(r, region));
        } else if free_now == 1 {
            partial.push(Arc::clone(region));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Weak;

    fn regions() -> &'static Regions {
        Box::leak(Box::new(Regions::new()))
    }

    fn weak(s: &Slot) -> Weak<Region> {
        Arc::downgrade(&s.region)
    }

    #[test]
    fn only_large_powers_of_two_fit() {
        assert!(fits(512 << 10, 4096));
        assert!(fits(1 << 20, 4096));
        assert!(fits(REGION, 4096));
        assert!(
            !fits(256 << 10, 4096),
            "small buffers could pin a region each"
        );
        assert!(!fits(3 << 19, 4096), "not a power of two");
        assert!(!fits(2 * REGION, 4096));
        assert!(!fits(1 << 20, 2 << 20), "alignment above the slot's");
    }

    #[test]
    fn slots_share_a_region_and_its_last_free_unmaps_it() {
        let regions = regions();
        let a = regions.alloc(1 << 20).unwrap();
        let b = regions.alloc(1 << 20).unwrap();
        assert!(
            Arc::ptr_eq(&a.region, &b.region),
            "two 1 MiB slots per region"
        );
        let (pa, pb) = (a.ptr().as_ptr() as usize, b.ptr().as_ptr() as usize);
        assert_eq!(pa.min(pb) % REGION, 0, "regions are aligned to 2 MiB");
        assert_eq!(pa.abs_diff(pb), 1 << 20);
        assert_eq!(
            lock(&regions.partial).len(),
            0,
            "a full region is not partial"
        );
        // A third slot needs a new region.
        let c = regions.alloc(1 << 20).unwrap();
        assert!(!Arc::ptr_eq(&a.region, &c.region));
        let (first, second) = (weak(&a), weak(&c));
        drop(a);
        assert_eq!(lock(&regions.partial).len(), 2);
        drop(b);
        drop(c);
        assert!(first.upgrade().is_none(), "the first region is unmapped");
        assert!(second.upgrade().is_none(), "the second region is unmapped");
        assert_eq!(lock(&regions.partial).len(), 0);
    }

    #[test]
    fn a_reused_slot_is_zeroed() {
        let regions = regions();
        let keep = regions.alloc(512 << 10).unwrap();
        let used = regions.alloc(512 << 10).unwrap();
        let at = used.ptr();
        // SAFETY: the slot is ours; 512 KiB lie inside it.
        unsafe { std::ptr::write_bytes(at.as_ptr(), 0xa5, 512 << 10) };
        drop(used);
        let again = regions.alloc(512 << 10).unwrap();
        assert_eq!(
            again.ptr(),
            at,
            "the freed slot is the one handed out again"
        );
        // SAFETY: the slot is ours and initialised.
        let bytes = unsafe { std::slice::from_raw_parts(again.ptr().as_ptr(), 512 << 10) };
        assert!(bytes.iter().all(|&b| b == 0));
        drop(keep);
    }

    /// The kernel marks the mapping for huge pages (`hg` in its `VmFlags`) unless it has
    /// none to give (`transparent_hugepage/enabled` missing or `[never]`).
    #[test]
    fn regions_are_advised_for_huge_pages() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if thp.is_empty() || thp.contains("[never]") {
            eprintln!("skipped: no transparent huge pages here");
            return;
        }
        let slot = regions().alloc(REGION).unwrap();
        let at = slot.ptr().as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        let mut flags = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((from, to)) = range.split_once('-') {
                    if let (Ok(from), Ok(to)) = (
                        usize::from_str_radix(from, 16),
                        usize::from_str_radix(to, 16),
                    ) {
                        inside = (from..to).contains(&at);
                        continue;
                    }
                }
            }
            if inside && line.starts_with("VmFlags:") {
                flags = Some(line.to_string());
            }
        }
        let flags = flags.expect("the region's mapping is listed");
        assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
    }
}
