//! thaw-client: how a thaw process on a node reaches its data. It owns the one configuration
//! type every process reads ([`Config`]: the store URL and S3 options, the cache directory and
//! budgets, the peers, the runtime dir), where it comes from (built-in defaults, the TOML file,
//! `THAW_*` environment variables, and command-line flags applied by the caller, each beating
//! the one before), how a process hands it to a child (`Config::pass_to`), and what it opens:
//! the store and the read tiers, peers included ([`connect`]).
//!
//! The `thaw` binary, its daemons, the benchmarks and the Python module all build their store
//! and tiers through it, so none of them keeps its own list of variables.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = thaw_client::Config::load(None)?;
//! let store = thaw_client::connect::open_store(&config)?;
//! let tiers = thaw_client::connect::tiers(&config, &store, true).await?;
//! # Ok(()) }
//! ```

mod config;
pub mod connect;
mod vars;

pub use config::{CacheSettings, Config, PeerSettings, RuntimeSettings, StoreSettings};
pub use vars::{variable_names, CONFIG_ENV, PEER_TOKEN_ENV};

use std::path::PathBuf;

/// Why a configuration could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named config file is not there.
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    /// The config file could not be read.
    #[error("reading the config file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid (syntax, an unknown key, a bad value).
    #[error("config file {path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the key and line.
        reason: String,
    },
    /// An environment variable holds a value that cannot be used.
    #[error("{name}={value:?}: {reason}")]
    BadVariable {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[source] thaw_core::Error),
    /// The peers could not be set up.
    #[error("setting up the peers: {0}")]
    Peers(#[source] thaw_cache_server::Error),
}
