//! Link speeds as command-line arguments.

use crate::cluster::Links;

/// How fast a node reads from its peers and from the store.
#[derive(clap::Args, Clone, Debug)]
pub struct LinkArgs {
    /// A node's link to its peers' caches, Gbit/s.
    #[arg(long, default_value_t = 10.0)]
    pub peer_gbps: f64,
    /// A node's link to the store, Gbit/s.
    #[arg(long, default_value_t = 2.0)]
    pub store_gbps: f64,
}

impl LinkArgs {
    /// The links in bytes per second.
    pub fn links(&self) -> crate::Result<Links> {
        for v in [self.peer_gbps, self.store_gbps] {
            if !(v.is_finite() && v > 0.0) {
                return Err(crate::Error::Invalid(format!(
                    "link speeds must be positive Gbit/s, not {v}"
                )));
            }
        }
        Ok(Links {
            peer_bytes_per_s: self.peer_gbps * 1e9 / 8.0,
            store_bytes_per_s: self.store_gbps * 1e9 / 8.0,
        })
    }
}
