//! Process-wide tuning for the compute commands (`train`, `eval`): thread counts and the
//! allocator. Each must run before the tensor work it tunes.

/// Sets the number of compute threads (candle and tokenizers size their pools from
/// `RAYON_NUM_THREADS` when they first start); must run before any tensor work.
pub fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// Makes candle run each matrix product on the calling thread. The trainer and the evaluator
/// keep the cores busy with their own threads (gradient shards, window groups); candle's own
/// rayon-parallel matmuls would queue behind each other in the shared pool instead (measured:
/// ~8% slower). candle reads `RAYON_NUM_THREADS` at every matmul; rayon's pool, already built by
/// then, keeps its size for the tokenizer. Call before the compute threads start.
pub fn single_threaded_matmuls() {
    std::env::set_var("RAYON_NUM_THREADS", "1");
}

/// Keeps freed tensor buffers in the process. glibc hands large freed blocks back to the OS and
/// page-faults them in again on the next op; a tiny model allocates and frees megabyte tensors
/// hundreds of times per step, and the page faults took ~30% of training time.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; called before heavy allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// Peak resident memory of this process (`VmHWM` of /proc/self/status, Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// A `kB` field of /proc/self/status.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `println!` that returns the write error instead of panicking: a closed stdout
/// (`starmind configs | head`) ends the command cleanly (`main` treats a broken pipe as done).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` that returns the write error instead of panicking (see [`outln!`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        write!(stdout, $($arg)*).and_then(|()| stdout.flush())
    }};
}

/// Whether `err` is (caused by) writing to a closed pipe: the reader is gone (`| head`), which
/// ends a command's output, not an error worth reporting.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
