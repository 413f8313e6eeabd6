//! thaw-cache-server owns the peer cache: the daemon every worker runs (`thaw cache-server`) and
//! the peer tier every store user reads through (`--peers`).
//!
//! A cluster shares chunks so that each one leaves the object store about once. Every chunk has
//! an owner among the peers, chosen by rendezvous hashing ([`rendezvous`]) over the current
//! membership ([`membership`]: a static list, a file, or a DNS name with one address per peer).
//! A client's miss goes to the chunk's owner ([`client::PeerTier`]), which serves it from its
//! memory or disk cache or fetches it from the object store once, collapsing concurrent requests
//! into one fetch, and keeps it ([`server`]). Nothing is trusted: the client verifies every chunk
//! against its id, and a peer that is down, slow, refuses or serves bad bytes is skipped for a
//! back-off period ([`health`]); the next peer in rendezvous order, then the object store, is used
//! instead, and the reader never sees the peer's failure.
//!
//! The wire protocol (paths, query, headers) is in [`protocol`] and docs/cluster.md.

pub mod auth;
pub mod client;
pub mod error;
pub mod health;
pub mod inventory;
pub mod load_test;
pub mod membership;
pub mod metrics;
pub mod protocol;
pub mod rendezvous;
pub mod server;
pub mod status;
pub mod tls;

pub use auth::Token;
pub use client::{PeerClientConfig, PeerTier};
pub use error::{Error, Result};
pub use membership::{Membership, PeerSpec};
pub use server::{CacheServer, ServerConfig};
