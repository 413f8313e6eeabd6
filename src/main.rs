//! The `thaw` binary: parses the command line and wires thaw's crates together. No storage,
//! indexing or file-system logic lives here; see the crates under core/ and indexer/.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`thaw ls TAG | head`), as command-line tools do.
    // SAFETY: resetting a signal disposition before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(error) = cli::config::apply_defaults() {
        eprintln!("thaw: error: {error:#}");
        return ExitCode::from(2);
    }
    let args = cli::Cli::parse();
    cli::init_logging(args.global.verbose);
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("thaw: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
