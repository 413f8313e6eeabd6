//! Who the peers are: a static list, a file re-read while running, or a DNS name whose
//! addresses are the peers (a Kubernetes headless service), re-resolved while running.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::rendezvous::Peer;
use crate::{Error, Result};

/// Port peers listen on when a list entry or DNS name gives none.
pub const DEFAULT_PEER_PORT: u16 = 7070;

/// Where the membership comes from (the `--peers` value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSpec {
    /// `http://a:7070,b:7070`: a fixed list (scheme `http` and port 7070 when left out).
    Static(Vec<Peer>),
    /// `file:/etc/thaw/peers` or `@/etc/thaw/peers`: one peer per line (`#` comments), re-read
    /// on every refresh.
    File(PathBuf),
    /// `dns://thaw-cache.ns.svc:7070`: every address the name resolves to is a peer on `port`
    /// (`dns+https://`: reached over HTTPS).
    Dns {
        /// The name.
        host: String,
        /// The peers' port.
        port: u16,
        /// Whether the peers serve HTTPS.
        https: bool,
    },
}

impl std::str::FromStr for PeerSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let bad = |reason: &str| Error::BadPeerSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let spec = spec.trim();
        if let Some(path) = spec
            .strip_prefix('@')
            .or_else(|| spec.strip_prefix("file:"))
        {
            if path.is_empty() {
                return Err(bad("no file named"));
            }
            return Ok(PeerSpec::File(PathBuf::from(path)));
        }
        let dns = spec
            .strip_prefix("dns://")
            .map(|rest| (rest, false))
            .or_else(|| spec.strip_prefix("dns+https://").map(|rest| (rest, true)));
        if let Some((rest, https)) = dns {
            let rest = rest.trim_end_matches('/');
            let (host, port) = match rest.rsplit_once(':') {
                Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                    let port = port
                        .parse::<u16>()
                        .map_err(|_| bad(&format!("port {port:?} is not a number")))?;
                    (host.to_string(), port)
                }
                _ => (rest.to_string(), DEFAULT_PEER_PORT),
            };
            if host.is_empty() {
                return Err(bad("no host name after dns://"));
            }
            return Ok(PeerSpec::Dns { host, port, https });
        }
        parse_list(spec).map(PeerSpec::Static).map_err(|r| bad(&r))
    }
}

/// Peers from a comma- or line-separated list, sorted and without repeats.
fn parse_list(text: &str) -> Result<Vec<Peer>, String> {
    let mut peers = Vec::new();
    for entry in text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        peers.push(parse_peer(entry)?);
    }
    peers.sort();
    peers.dedup();
    Ok(peers)
}

/// One peer: `http://host:port`, `host:port` or `host`.
fn parse_peer(entry: &str) -> Result<Peer, String> {
    let with_scheme = if entry.contains("://") {
        entry.to_string()
    } else {
        format!("http://{entry}")
    };
    let mut url: url::Url = with_scheme
        .parse()
        .map_err(|e| format!("peer {entry:?}: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("peer {entry:?}: only http and https are supported"));
    }
    if url.port().is_none() && !entry.contains("://") {
        url.set_port(Some(DEFAULT_PEER_PORT))
            .map_err(|_| format!("peer {entry:?}: cannot take a port"))?;
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(format!("peer {entry:?}: give only scheme, host and port"));
    }
    Peer::from_url(url).ok_or_else(|| format!("peer {entry:?}: no host"))
}

impl PeerSpec {
    /// The peers this spec names now (reads the file or asks DNS).
    pub async fn resolve(&self) -> Result<Vec<Peer>> {
        match self {
            PeerSpec::Static(peers) => Ok(peers.clone()),
            PeerSpec::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| Error::Read {
                        path: path.clone(),
                        source,
                    })?;
                parse_list(&text).map_err(|reason| Error::BadPeerSpec {
                    spec: path.display().to_string(),
                    reason,
                })
            }
            PeerSpec::Dns { host, port, https } => {
                let scheme = if *https { "https" } else { "http" };
                let addrs = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|source| Error::Resolve {
                        host: host.clone(),
                        port: *port,
                        source,
                    })?;
                let mut peers: Vec<Peer> = addrs
                    .filter_map(|addr| Peer::from_url(format!("{scheme}://{addr}").parse().ok()?))
                    .collect();
                peers.sort();
                peers.dedup();
                Ok(peers)
            }
        }
    }
}

/// The current membership, refreshed from its [`PeerSpec`].
#[derive(Debug)]
pub struct Membership {
    spec: PeerSpec,
    current: RwLock<Arc<Vec<Peer>>>,
}

impl Membership {
    /// Resolves `spec` once. A file or DNS name that fails now gives an empty membership and a
    /// warning (every read then goes to the object store) rather than an error: peers are an
    /// optimisation, and the next refresh may find them.
    pub async fn start(spec: PeerSpec) -> Self {
        let peers = match spec.resolve().await {
            Ok(peers) => peers,
            Err(e) => {
                tracing::warn!(error = %e, "no peers for now");
                Vec::new()
            }
        };
        Membership {
            spec,
            current: RwLock::new(Arc::new(peers)),
        }
    }

    /// The peers as of the last refresh, sorted.
    pub fn current(&self) -> Arc<Vec<Peer>> {
        self.current.read().expect("membership lock").clone()
    }

    /// Resolves the spec again; true when the membership changed. On failure the previous
    /// membership is kept.
    pub async fn refresh(&self) -> Result<bool> {
        let peers = self.spec.resolve().await?;
        let mut current = self.current.write().expect("membership lock");
        if **current == peers {
            return Ok(false);
        }
        tracing::info!(
            before = current.len(),
            after = peers.len(),
            peers = %peers.iter().map(|p| p.authority.as_str()).collect::<Vec<_>>().join(","),
            "peer membership changed"
        );
        *current = Arc::new(peers);
        Ok(true)
    }

    /// Refreshes every `every` in a background task (only for files and DNS names).
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        if matches!(self.spec, PeerSpec::Static(_)) {
            return None;
        }
        let membership = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(membership) = membership.upgrade() else {
                    return;
                };
                if let Err(e) = membership.refresh().await {
                    tracing::warn!(error = %e, "peer membership refresh failed; keeping the last one");
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorities(spec: &PeerSpec) -> Vec<String> {
        match spec {
            PeerSpec::Static(peers) => peers.iter().map(|p| p.authority.clone()).collect(),
            other => panic!("not static: {other:?}"),
        }
    }

    #[test]
    fn lists_default_scheme_and_port_and_drop_repeats() {
        let spec: PeerSpec = "b.local, http://a.local:8000,b.local:7070,[::1]:9"
            .parse()
            .unwrap();
        assert_eq!(
            authorities(&spec),
            ["[::1]:9", "a.local:8000", "b.local:7070"]
        );
    }

    #[test]
    fn dns_and_file_forms() {
        assert_eq!(
            "dns://thaw.ns.svc:7171".parse::<PeerSpec>().unwrap(),
            PeerSpec::Dns {
                host: "thaw.ns.svc".into(),
                port: 7171,
                https: false,
            }
        );
        assert_eq!(
            "dns+https://thaw.ns.svc:7171".parse::<PeerSpec>().unwrap(),
            PeerSpec::Dns {
                host: "thaw.ns.svc".into(),
                port: 7171,
                https: true,
            }
        );
        assert_eq!(
            "dns://thaw.ns.svc".parse::<PeerSpec>().unwrap(),
            PeerSpec::Dns {
                host: "thaw.ns.svc".into(),
                port: DEFAULT_PEER_PORT,
                https: false,
            }
        );
        assert_eq!(
            "@/etc/peers".parse::<PeerSpec>().unwrap(),
            PeerSpec::File("/etc/peers".into())
        );
    }

    #[test]
    fn bad_specs_name_the_problem() {
        for (spec, says) in [
            ("ftp://a:1", "only http"),
            ("http://a:1/path", "only scheme"),
            ("dns://a:port", "not a number"),
            ("dns://", "no host"),
            ("@", "no file"),
        ] {
            let err = spec.parse::<PeerSpec>().unwrap_err().to_string();
            assert!(err.contains(says) && err.contains(spec), "{spec}: {err}");
        }
    }

    #[tokio::test]
    async fn a_file_is_reread_on_refresh_and_dns_resolves_localhost() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peers");
        std::fs::write(&file, "# the cluster\n127.0.0.1:1\n127.0.0.1:2\n").unwrap();
        let membership = Membership::start(PeerSpec::File(file.clone())).await;
        assert_eq!(membership.current().len(), 2);
        assert!(!membership.refresh().await.unwrap());
        std::fs::write(&file, "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3").unwrap();
        assert!(membership.refresh().await.unwrap());
        assert_eq!(membership.current().len(), 3);
        std::fs::remove_file(&file).unwrap();
        assert!(membership.refresh().await.is_err());
        assert_eq!(membership.current().len(), 3, "kept on failure");

        let dns = PeerSpec::Dns {
            host: "localhost".into(),
            port: 7070,
            https: true,
        };
        let peers = dns.resolve().await.unwrap();
        assert!(
            peers
                .iter()
                .any(|p| p.authority == "127.0.0.1:7070" && p.base.scheme() == "https"),
            "{peers:?}"
        );
    }
}
