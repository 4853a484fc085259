//! Heap settings for training and sampling loops.
//!
//! candle allocates a fresh buffer for every op output and frees it when the tensor drops.
//! With glibc's defaults, blocks above the (dynamic) mmap threshold get their own mapping and
//! the top of the heap is returned to the kernel once 128 KiB of it is free, so every training
//! step maps, page-faults and zeroes its activations again: `perf` put ~25% of a `small`
//! Base-LCM step in the kernel's page-fault path. Keeping freed memory in the process lets the
//! next step reuse it (measured: 3.39 s → 2.46 s per step, `bench/train_lcm.sh` shapes). The
//! price is that the resident size stays at its peak until the process exits, which is what a
//! training job does anyway.

/// Largest value glibc accepts for `M_MMAP_THRESHOLD` on 64-bit targets (32 MiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_MAX: i32 = 32 << 20;

/// Extra heap requested with each growth, so growth happens rarely.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: i32 = 256 << 20;

/// Tells the C allocator to keep freed memory for reuse (see the module docs). Call once,
/// early, before worker threads start. Returns whether the settings were applied; on
/// platforms other than Linux with glibc it does nothing and returns `false`.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called with valid
        // parameter ids and values, and allocations made before or after stay valid.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_TOP_PAD, TOP_PAD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Asks the kernel to back `buf` with transparent huge pages (Linux `madvise(MADV_HUGEPAGE)`,
/// for the whole 4 KiB pages inside it). Call it on a fresh, untouched buffer that is about to
/// be filled, such as a multi-GB checkpoint being read: it then faults in 2 MiB at a time
/// instead of 4 KiB, which cuts the kernel's page-fault work several-fold. Advice only:
/// returns whether the kernel accepted it, and does nothing elsewhere.
pub fn advise_huge_pages<T>(buf: &mut [T]) -> bool {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = buf.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let first = start.div_ceil(PAGE) * PAGE;
        let last = end / PAGE * PAGE;
        if last <= first {
            return false;
        }
        // SAFETY: [first, last) lies within `buf`, which this function borrows mutably;
        // MADV_HUGEPAGE changes how the kernel backs the pages, never their contents.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            ) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = buf;
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_page_advice_keeps_the_contents() {
        let mut buf = vec![7u8; 8 << 20];
        super::advise_huge_pages(&mut buf);
        assert!(buf.iter().all(|&b| b == 7));
        // Too small to hold a whole page: nothing to advise.
        assert!(!super::advise_huge_pages(&mut [0u8; 16][..]));
    }

    #[test]
    fn applies_exactly_where_glibc_is_the_allocator() {
        assert_eq!(
            super::retain_freed_memory(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
