//! Prometheus views of the tiers and the object store, read at scrape time, shared by every
//! process that serves `/metrics` (a mount, a cache server).

use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

use crate::store::Store;
use crate::tier::TieredStore;

/// The registry as Prometheus (OpenMetrics) text.
pub fn encode_text(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// Reads the tier and store counters at scrape time.
pub struct TierCollector {
    tiers: TieredStore,
    store: Store,
}

impl TierCollector {
    /// Reports `tiers` and `store`.
    pub fn new(tiers: TieredStore, store: Store) -> Self {
        TierCollector { tiers, store }
    }
}

impl std::fmt::Debug for TierCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierCollector")
            .field("store", &self.store)
            .finish()
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&[(&str, &str)], u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, value) in values {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConstCounter::new(*value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for TierCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self.tiers.counters();
        let names = self.tiers.cache_names();
        let mut hits: Vec<(Vec<(&str, &str)>, u64)> = names
            .iter()
            .zip(&c.cache_hits)
            .map(|(name, n)| (vec![("tier", name.as_str())], n.load(Ordering::Relaxed)))
            .collect();
        if self.tiers.has_peers() {
            hits.push((
                vec![("tier", "peer")],
                c.peer_fetches.load(Ordering::Relaxed),
            ));
        }
        hits.push((
            vec![("tier", "store")],
            c.origin_fetches.load(Ordering::Relaxed),
        ));
        let hits: Vec<(&[(&str, &str)], u64)> =
            hits.iter().map(|(l, v)| (l.as_slice(), *v)).collect();
        counter(
            &mut encoder,
            "chunk_tier_hits",
            "Chunks served per tier",
            &hits,
        )?;
        counter(
            &mut encoder,
            "chunk_verify_failures",
            "Chunks a tier returned that failed verification",
            &[(&[], c.verify_failures.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut encoder,
            "chunk_peer_bytes",
            "Bytes of chunks fetched from peers",
            &[(&[], c.peer_bytes.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut encoder,
            "chunk_cache_fill_failures",
            "Chunks a cache tier could not keep (a full cache disk); the reads went on",
            &[(&[], c.fill_failures.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut encoder,
            "single_flight_joins",
            "Chunk requests that waited on a fetch of the same chunk already in flight",
            &[(&[], c.single_flight_joins.load(Ordering::Relaxed))],
        )?;
        let r = self.store.requests();
        counter(
            &mut encoder,
            "store_requests",
            "Requests made to the object store",
            &[
                (&[("op", "get")], r.gets.load(Ordering::Relaxed)),
                (&[("op", "get_range")], r.range_gets.load(Ordering::Relaxed)),
                (&[("op", "put")], r.puts.load(Ordering::Relaxed)),
                (&[("op", "other")], r.other.load(Ordering::Relaxed)),
            ],
        )?;
        counter(
            &mut encoder,
            "store_read_bytes",
            "Bytes read from the object store",
            &[(&[], r.bytes_read.load(Ordering::Relaxed))],
        )
    }
}
