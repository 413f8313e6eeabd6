//! The `thaw` binary: parses the command line and wires thaw's crates together. No storage,
//! indexing or file-system logic lives here; see the crates under core/ and indexer/.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if let Err(error) = cli::config::apply_defaults() {
        eprintln!("thaw: error: {error:#}");
        return ExitCode::from(2);
    }
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
