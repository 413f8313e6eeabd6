//! The `thaw` binary: parses the command line and wires thaw's crates together. No storage,
//! indexing or file-system logic lives here; see the crates under core/ and indexer/.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    thaw_sys::host::tune_allocator();
    let args = cli::Cli::parse();
    if !args.serves_connections() {
        // Daemons keep Rust's default (ignored): a client hanging up must not kill a server.
        thaw_sys::process::die_on_closed_pipe();
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
