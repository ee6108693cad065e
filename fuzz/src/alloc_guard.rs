//! The targets' global allocator: the system's, but any single allocation over
//! [`MAX_ALLOCATION`] aborts, so libFuzzer reports the input that asked for it. Without a
//! sanitizer libFuzzer's own `-malloc_limit_mb` sees nothing, and a decoder that sizes a buffer
//! from a length field would otherwise pass unnoticed on a machine with memory to spare.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;

/// Largest single allocation any target may make: far above every cap of the protocol (the
/// largest frame is about 1 MiB), far below what a length field could ask for.
pub const MAX_ALLOCATION: usize = 64 << 20;

/// [`System`], refusing oversized requests by aborting.
pub struct Guard;

fn refuse(size: usize) -> ! {
    // No formatting and no allocation here: we are inside the allocator.
    let _ = std::io::stderr().write_all(b"\nalloc_guard: a single allocation over 64 MiB (");
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = size;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let _ = std::io::stderr().write_all(&digits[at..]);
    let _ = std::io::stderr().write_all(b" bytes)\n");
    std::process::abort()
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the only
// addition is the size check, which aborts before any memory is touched.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            refuse(layout.size());
        }
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            refuse(layout.size());
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            refuse(new_size);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GUARD: Guard = Guard;
