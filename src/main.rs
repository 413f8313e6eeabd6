//! The `thaw` binary: parses the command line and wires thaw's crates together. No storage,
//! indexing or file-system logic lives here; see the crates under core/ and indexer/.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Keeps glibc from giving every chunk-sized buffer its own fresh mapping.
///
/// Chunks are 1 to 16 MiB; by default glibc serves each such allocation with a new mmap, so every
/// chunk read faults its pages in and has them zeroed by the kernel, and unmaps them when freed.
/// Serving them from the heap and keeping freed memory (up to 512 MiB) for reuse cut page faults
/// of a warm `thaw weights load` tenfold and raised its rate 1.6x (docs/benchmarks.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let args = cli::Cli::parse();
    if !args.serves_connections() {
        // Die quietly on a closed pipe (`thaw ls TAG | head`), as command-line tools do.
        // Daemons keep Rust's default (ignored): a client hanging up must not kill a server.
        // SAFETY: resetting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    cli::init_logging(args.global.verbose);
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("thaw: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
