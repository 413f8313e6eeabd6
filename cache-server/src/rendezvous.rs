//! Rendezvous (highest random weight) hashing: which peer owns a chunk.
//!
//! Every (peer, chunk) pair gets a score from blake3; the chunk's owner is the peer with the
//! highest score and the next peers in score order are its fallbacks. Every client computes the
//! same order from the same membership with no coordination, and when a peer joins or leaves only
//! the chunks it wins (or won) change owner: about 1/N of them.

use thaw_core::ChunkId;

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    /// `host:port` as it appears in the membership: the identity that is hashed, so every
    /// client must name a peer the same way (the DNS form uses the resolved address).
    pub authority: String,
    /// Base URL requests go to (`http://host:port`).
    pub base: url::Url,
}

impl Peer {
    /// A peer from a URL with a host and a port (`http://10.0.0.7:7070`).
    pub fn from_url(base: url::Url) -> Option<Self> {
        let host = base.host_str()?;
        let port = base.port_or_known_default()?;
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Some(Peer { authority, base })
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.authority)
    }
}

/// The score of `peer` for `chunk`: higher wins.
pub fn score(peer: &Peer, chunk: &ChunkId) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(peer.authority.as_bytes());
    hasher.update(&[0]);
    hasher.update(&chunk.0);
    let hash = hasher.finalize();
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// `peers` in the order a request for `chunk` tries them: the owner first.
pub fn rank<'a>(peers: &'a [Peer], chunk: &ChunkId) -> Vec<&'a Peer> {
    let mut scored: Vec<(u64, &Peer)> = peers.iter().map(|p| (score(p, chunk), p)).collect();
    scored.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.authority.cmp(&b.1.authority))
    });
    scored.into_iter().map(|(_, p)| p).collect()
}

/// The owner of `chunk`, `None` when there are no peers.
pub fn owner<'a>(peers: &'a [Peer], chunk: &ChunkId) -> Option<&'a Peer> {
    peers.iter().max_by(|a, b| {
        score(a, chunk)
            .cmp(&score(b, chunk))
            .then_with(|| b.authority.cmp(&a.authority))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<Peer> {
        (0..n)
            .map(|i| Peer::from_url(format!("http://10.0.0.{i}:7070").parse().unwrap()).unwrap())
            .collect()
    }

    fn ids(n: u32) -> Vec<ChunkId> {
        (0..n).map(|i| ChunkId::of(&i.to_le_bytes())).collect()
    }

    #[test]
    fn owner_is_the_first_of_the_ranking_and_independent_of_list_order() {
        let mut ps = peers(5);
        for id in ids(200) {
            let first = rank(&ps, &id)[0].clone();
            assert_eq!(owner(&ps, &id), Some(&first));
            ps.reverse();
            assert_eq!(
                owner(&ps, &id),
                Some(&first),
                "order of the list matters not"
            );
        }
        assert_eq!(owner(&[], &ChunkId::of(b"x")), None);
    }

    #[test]
    fn chunks_spread_evenly() {
        let ps = peers(4);
        let mut counts = [0usize; 4];
        for id in ids(8000) {
            let o = owner(&ps, &id).unwrap();
            counts[ps.iter().position(|p| p == o).unwrap()] += 1;
        }
        for c in counts {
            assert!((1700..=2300).contains(&c), "uneven spread {counts:?}");
        }
    }

    #[test]
    fn a_joining_peer_takes_only_its_share_and_a_leaving_peer_gives_only_its_own() {
        let before = peers(4);
        let after = peers(5);
        let newcomer = &after[4];
        let mut moved = 0;
        for id in ids(5000) {
            let (old, new) = (owner(&before, &id).unwrap(), owner(&after, &id).unwrap());
            if old != new {
                assert_eq!(new, newcomer, "a chunk moved between two old peers");
                moved += 1;
            }
        }
        assert!(
            (800..=1200).contains(&moved),
            "{moved} of 5000 moved to the 5th peer"
        );

        let without = [&before[..1], &before[2..]].concat();
        for id in ids(5000) {
            let (old, new) = (owner(&before, &id).unwrap(), owner(&without, &id).unwrap());
            if old != new {
                assert_eq!(old, &before[1], "only the leaver's chunks move");
                assert_eq!(new, rank(&before, &id)[1], "they go to the next in rank");
            }
        }
    }

    #[test]
    fn ipv6_hosts_are_bracketed_in_the_authority() {
        let p = Peer::from_url("http://[::1]:7070".parse().unwrap()).unwrap();
        assert_eq!(p.authority, "[::1]:7070");
    }
}
