//! This process's memory: its peak resident size, for the benchmarks'
//! figures (Linux `/proc/self/status`; NaN elsewhere), and the allocator
//! settings an engine process runs with.

/// Peak resident memory since start (or the last [`reset_peak_rss`]), in MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Starts a new peak from the current resident memory.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Keeps the engine's large, short-lived buffers (activations, im2col
/// bands, attention outputs: up to hundreds of MiB, made and dropped at
/// every layer) in glibc's heap for reuse instead of a fresh `mmap` each,
/// whose pages the kernel must zero on first touch: 7-10 % of a 512 px UNet
/// step went to `clear_page_erms` (docs/PERFORMANCE.md). Buffers above
/// 256 MiB still get their own mapping, and up to 1 GiB of free heap is kept
/// before any is returned. Call once at start, before the model loads; a
/// no-op off glibc.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's thresholds; called before the
    // engine allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
