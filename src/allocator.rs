//! The binary's global allocator: mimalloc, plus two slots that keep sled's
//! freed log buffers for its next log segment.
//!
//! sled allocates a fresh buffer of `segment_size` bytes (8 MiB for new data
//! dirs, aligned to 8 KiB) for every log segment and frees the one before.
//! Such blocks are too big for mimalloc to keep, so each segment's 8 MiB was
//! mapped, page-faulted and zeroed by the kernel again: about 7% of a PUT's
//! server CPU under load (`clear_page_erms` under sled's log writes, in
//! `perf`). A block freed here is reused by the next allocation of the same
//! layout instead, so those pages stay mapped.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

/// mimalloc, keeping freed [`recyclable`] blocks for reuse.
pub struct Allocator {
    free: [AtomicPtr<u8>; SLOTS],
}

/// Two: sled holds at most two log buffers at once in steady state (the one
/// being written out and the one being filled).
const SLOTS: usize = 2;

/// sled's log buffers are the only blocks this large with this alignment.
const LOG_BUFFER_ALIGN: usize = 8192;
const LOG_BUFFER_MIN: usize = 64 << 10;

/// Whether a block of `layout` is kept when freed.
pub fn recyclable(layout: Layout) -> bool {
    layout.align() == LOG_BUFFER_ALIGN && layout.size() >= LOG_BUFFER_MIN
}

impl Allocator {
    pub const fn new() -> Allocator {
        Allocator { free: [const { AtomicPtr::new(null_mut()) }; SLOTS] }
    }

    /// A kept block of exactly `layout`, if one is held. A kept block of
    /// another size is handed back to mimalloc.
    ///
    /// # Safety
    /// `layout` is [`recyclable`].
    unsafe fn take(&self, layout: Layout) -> *mut u8 {
        for slot in &self.free {
            // The swap makes this caller the block's only owner.
            let block = slot.swap(null_mut(), Ordering::Acquire);
            if block.is_null() {
                continue;
            }
            // SAFETY: `keep` wrote the block's size into its first bytes,
            // and a recyclable block is larger and more aligned than a usize.
            let size = unsafe { block.cast::<usize>().read() };
            if size == layout.size() {
                return block;
            }
            // SAFETY: the block was allocated by mimalloc with this size and
            // the alignment every recyclable layout has.
            unsafe { mimalloc::MiMalloc.dealloc(block, Layout::from_size_align_unchecked(size, LOG_BUFFER_ALIGN)) };
        }
        null_mut()
    }

    /// Keeps a freed block in an empty slot; false if every slot is full.
    ///
    /// # Safety
    /// `block` was allocated by this allocator with `layout`, which is
    /// [`recyclable`], and is no longer used by its owner.
    unsafe fn keep(&self, block: *mut u8, layout: Layout) -> bool {
        // SAFETY: the block is ours now and big and aligned enough for a usize.
        unsafe { block.cast::<usize>().write(layout.size()) };
        self.free.iter().any(|slot| slot.compare_exchange(null_mut(), block, Ordering::Release, Ordering::Relaxed).is_ok())
    }
}

impl Drop for Allocator {
    /// Only a test's allocator is dropped; the global one lives as long as
    /// the process.
    fn drop(&mut self) {
        for slot in &self.free {
            let block = slot.swap(null_mut(), Ordering::Acquire);
            if !block.is_null() {
                // SAFETY: as in `take`.
                unsafe {
                    let size = block.cast::<usize>().read();
                    mimalloc::MiMalloc.dealloc(block, Layout::from_size_align_unchecked(size, LOG_BUFFER_ALIGN));
                }
            }
        }
    }
}

impl Default for Allocator {
    fn default() -> Allocator {
        Allocator::new()
    }
}

// SAFETY: every block handed out comes from mimalloc with the layout asked
// for (a kept block is reused only for the size it was allocated with and the
// one alignment recyclable layouts have); a slot's swap gives a block to one
// caller only.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if recyclable(layout) {
            // SAFETY: checked just above.
            let block = unsafe { self.take(layout) };
            if !block.is_null() {
                return block;
            }
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Zeroed blocks are rare and small; mimalloc knows which pages are
        // already zero.
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: the caller's guarantees, and the layout is checked first.
        if recyclable(layout) && unsafe { self.keep(block, layout) } {
            return;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Every block, kept ones too, was allocated by mimalloc with `layout`.
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.realloc(block, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_log_buffer_is_reused_for_the_same_size_only() {
        let a = Allocator::new();
        let big = Layout::from_size_align(1 << 20, LOG_BUFFER_ALIGN).unwrap();
        let other = Layout::from_size_align(2 << 20, LOG_BUFFER_ALIGN).unwrap();
        unsafe {
            let first = a.alloc(big);
            assert!(!first.is_null());
            first.write_bytes(7, big.size());
            a.dealloc(first, big);
            // Same layout: the very block comes back, still mapped.
            let again = a.alloc(big);
            assert_eq!(again, first);
            a.dealloc(again, big);
            // Another size: the kept block is released, not handed out.
            let fresh = a.alloc(other);
            fresh.write_bytes(1, other.size());
            assert!(a.free.iter().all(|s| s.load(Ordering::Relaxed).is_null()));
            a.dealloc(fresh, other);
            let kept = a.take(other);
            assert_eq!(kept, fresh);
            a.dealloc(kept, other);
        }
    }

    #[test]
    fn only_large_page_aligned_blocks_are_kept() {
        assert!(recyclable(Layout::from_size_align(8 << 20, 8192).unwrap()));
        assert!(!recyclable(Layout::from_size_align(8 << 20, 8).unwrap()));
        assert!(!recyclable(Layout::from_size_align(4096, 8192).unwrap()));
        let a = Allocator::new();
        let small = Layout::from_size_align(64, 8).unwrap();
        unsafe {
            let p = a.alloc(small);
            a.dealloc(p, small);
        }
        assert!(a.free.iter().all(|s| s.load(Ordering::Relaxed).is_null()));
    }

    #[test]
    fn a_full_set_of_slots_frees_the_extra_block() {
        let a = Allocator::new();
        let big = Layout::from_size_align(256 << 10, LOG_BUFFER_ALIGN).unwrap();
        unsafe {
            let blocks: Vec<*mut u8> = (0..SLOTS + 1).map(|_| a.alloc(big)).collect();
            for &b in &blocks {
                a.dealloc(b, big);
            }
            let held: Vec<*mut u8> = a.free.iter().map(|s| s.load(Ordering::Relaxed)).collect();
            assert_eq!(held, blocks[..SLOTS]);
            for _ in 0..SLOTS {
                let b = a.alloc(big);
                assert!(blocks.contains(&b));
                a.dealloc(b, big);
            }
        }
    }
}
