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

#[cfg(test)]
mod tests {
    #[test]
    fn applies_exactly_where_glibc_is_the_allocator() {
        assert_eq!(
            super::retain_freed_memory(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
