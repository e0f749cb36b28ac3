//! The policy's memory allocator: a bump arena made for one request per instance.
//!
//! The host runs every call on a fresh instance and throws its memory away afterwards, so a
//! general-purpose allocator's work (size classes, free lists, coalescing) buys nothing. Worse, Rust's
//! default wasm allocator (dlmalloc) takes every new chunk from `memory.grow` and never uses the
//! free space of the initial memory, and each `memory.grow` makes the host `mprotect` pages in and,
//! when the instance's slot is reused, out again: system calls and TLB shootdowns on every request.
//!
//! This arena hands out memory from `__heap_base` upwards, first from the initial memory (which
//! `relish build` makes large enough for a typical request), growing only when a request needs more.
//! Allocation is a pointer bump; freeing the most recent allocation gives its space back, and when
//! every allocation has been freed (the end of a call: the request and the answer are both dropped)
//! the arena starts over, so an instance reused for many calls (benchmarks, tools) does not grow.
//!
//! WebAssembly without the threads proposal has one thread, which is what makes the plain `Cell`s
//! below sound.

#![allow(unsafe_code, reason = "a global allocator is unsafe by definition")]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

const PAGE: usize = 64 << 10;

/// The arena's state: the next free byte, the end of linear memory, and how many allocations are
/// alive.
pub struct Arena {
    next: Cell<usize>,
    end: Cell<usize>,
    live: Cell<usize>,
}

// SAFETY: wasm32-unknown-unknown without the threads proposal runs on one thread.
unsafe impl Sync for Arena {}

impl Arena {
    /// An arena that finds its bounds on first use.
    pub const fn new() -> Self {
        Arena { next: Cell::new(0), end: Cell::new(0), live: Cell::new(0) }
    }

    fn heap_base() -> usize {
        unsafe extern "C" {
            /// Set by the linker: the first byte after static data and the stack.
            static __heap_base: u8;
        }
        // Only the symbol's address is taken, never its value.
        core::ptr::addr_of!(__heap_base) as usize
    }

    /// Makes `[start, start + size)` available, growing memory if needed; `None` if the host
    /// refuses (the memory cap).
    fn reserve(&self, start: usize, size: usize) -> Option<usize> {
        if self.end.get() == 0 {
            self.next.set(Self::heap_base());
            self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        }
        let end = start.checked_add(size)?;
        if end > self.end.get() {
            // Grow by at least what is missing, and at least double, so a large request grows
            // memory a few times, not once per allocation.
            let missing = (end - self.end.get()).div_ceil(PAGE);
            let pages = missing.max(self.end.get() / PAGE);
            if core::arch::wasm32::memory_grow(0, pages) == usize::MAX
                && core::arch::wasm32::memory_grow(0, missing) == usize::MAX
            {
                return None;
            }
            self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        }
        Some(end)
    }
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every block handed out lies inside linear memory, is aligned as asked, and does not
// overlap another live block: blocks are carved in increasing order from `next`, and `next` only
// moves back over blocks that were freed (the last one, or all of them).
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.end.get() == 0 {
            let _ = self.reserve(0, 0);
        }
        let start = self.next.get().next_multiple_of(layout.align());
        match self.reserve(start, layout.size()) {
            Some(end) => {
                self.next.set(end);
                self.live.set(self.live.get() + 1);
                start as *mut u8
            }
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let live = self.live.get() - 1;
        self.live.set(live);
        if live == 0 {
            self.next.set(Self::heap_base());
        } else if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize;
        if start + layout.size() == self.next.get() {
            // The most recent block grows (or shrinks) in place.
            return match self.reserve(start, new_size) {
                Some(end) => {
                    self.next.set(end);
                    ptr
                }
                None => core::ptr::null_mut(),
            };
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees `layout` describes `ptr`, and `new_size` is non-zero.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
