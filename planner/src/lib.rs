//! thaw-planner: decisions made before a replica starts, as linear programs.
//!
//! - [`buffer`] sizes how many GPUs of each offer (kind, region, price, availability, VM boot
//!   time) to hold per time window, running or idle in the buffer, at least cost, so that demand
//!   up to a quantile is served within a latency target. Demand comes from a request trace or a
//!   forecast ([`demand`]); offers from a CSV file ([`offers`]).
//! - [`place`] assigns replicas (an image tag, a model tag, GPUs) to nodes so that the bytes each
//!   must fetch from outside its node, and so its modelled time to ready, are least, subject to
//!   free GPUs; what each node holds comes from the inventories its `thaw cache-server` reports
//!   ([`cluster`]).
//! - [`extender`] answers kube-scheduler's extender protocol (`/filter`, `/prioritize`) by the
//!   same measure: the share of a pod's image and model bytes a node (and its peers) hold.
//!
//! The solver is `good_lp` over microlp (pure Rust): the buffer program is solved as an integer
//! program, the placement as its LP relaxation rounded (docs/architecture.md says why). The crate
//! owns no storage; it reads files and peers' inventory endpoints and returns plans.

pub mod args;
pub mod buffer;
pub mod cluster;
pub mod coldstart;
pub mod demand;
pub mod extender;
mod lines;
pub mod links;
pub mod offers;
pub mod place;
pub mod serve;
mod solve;

use std::path::PathBuf;

/// What can go wrong while planning.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of an input file is malformed.
    #[error("{path}: line {line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A JSON input does not have the expected shape.
    #[error("{path}: {message}")]
    Json {
        /// The file (or the peer URL).
        path: String,
        /// What is wrong, with the field path.
        message: String,
    },
    /// Demand in some window exceeds what every offer together can give.
    #[error(
        "infeasible: window {window} ({start_s}..{end_s} s) needs {needed} GPUs but every offer \
         together has {available}: short by {short}"
    )]
    Infeasible {
        /// The first window that cannot be served.
        window: usize,
        /// Its start, seconds.
        start_s: f64,
        /// Its end, seconds.
        end_s: f64,
        /// GPUs it needs.
        needed: u64,
        /// GPUs all offers have.
        available: u64,
        /// needed - available.
        short: u64,
    },
    /// The replicas need more GPUs than the nodes have free.
    #[error(
        "infeasible: the replicas need {needed} GPUs, the nodes have {free} free: short by {short}"
    )]
    NoRoom {
        /// GPUs the replicas need.
        needed: u64,
        /// GPUs free on all nodes.
        free: u64,
        /// needed - free.
        short: u64,
    },
    /// An argument is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The solver failed (it should not on a feasible program).
    #[error("solver: {0}")]
    Solver(String),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
