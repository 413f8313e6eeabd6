//! What a mount prefetches: its own trace, or, when it has none yet, the traces of related
//! manifests carried over onto its chunks.
//!
//! Chunks are content addressed, so a trace recorded on one manifest names chunks that related
//! manifests share: a new version of an image (the tag's history), another image on the same
//! layers, the same model under a new tag. An entry whose chunk id is in the mounted manifest
//! maps to it directly; an entry whose chunk changed maps by path and offset to the chunks that
//! now hold those bytes of the same file (a rebuilt package, a re-chunked file). Related traces
//! are tried in order ([`related`]), and the first [`MAX_SOURCES`] that apply at all are merged,
//! ordered by when their runs first read each chunk.

use std::collections::{HashMap, HashSet};

use thaw_core::manifest::{Extent, FileKind, Manifest};
use thaw_core::store::Store;
use thaw_core::ChunkId;

use super::log::{trace_dir, TraceLog};
use super::{Trace, TraceSource};

/// Related traces merged into one prefetch at most.
pub const MAX_SOURCES: usize = 3;

/// Earlier versions of the tag looked at.
const VERSIONS_LOOKED_AT: usize = 4;

/// Images sharing layers looked at.
const SIBLINGS_LOOKED_AT: usize = 4;

/// A manifest whose trace may apply, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Related {
    /// The manifest.
    pub manifest: ChunkId,
    /// Why it is related (shown by `thaw trace show` and `thaw mount status`).
    pub relation: String,
}

/// What a mount prefetches, in order, and from which traces.
#[derive(Clone, Debug, Default)]
pub struct PrefetchPlan {
    /// Chunk table indexes of the mounted manifest, in prefetch order.
    pub chunks: Vec<u32>,
    /// The traces they came from (empty: no trace applied).
    pub sources: Vec<TraceSource>,
}

/// The tag a mount's `name` (a tag or a manifest id) may be: a name that is a valid tag (a
/// manifest id is one too; its history is then simply not found).
pub fn tag_named(name: &str) -> Option<&str> {
    thaw_core::store::validate_tag(name).is_ok().then_some(name)
}

/// The manifests related to `manifest`, best first: the earlier versions of `tag` (newest
/// first), then the images sharing its layers (most shared first). Lookup failures are logged
/// and skipped (prefetch is a hint).
pub async fn related(store: &Store, manifest: &Manifest, tag: Option<&str>) -> Vec<Related> {
    let own = manifest.id();
    let mut out: Vec<Related> = Vec::new();
    if let Some(tag) = tag {
        match store.tag_history(tag).await {
            Ok(history) => out.extend(
                history
                    .into_iter()
                    .take(VERSIONS_LOOKED_AT)
                    .enumerate()
                    .map(|(back, id)| Related {
                        manifest: id,
                        relation: format!("previous version {} of tag {tag}", back + 1),
                    }),
            ),
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(tag, error = %e, "cannot read the tag's history"),
        }
    }
    match thaw_core::related::sharing_layers(store, manifest).await {
        Ok(siblings) => out.extend(siblings.into_iter().take(SIBLINGS_LOOKED_AT).map(
            |(id, layers)| Related {
                manifest: id,
                relation: format!(
                    "shares {layers} layer{}",
                    if layers == 1 { "" } else { "s" }
                ),
            },
        )),
        Err(e) => tracing::warn!(error = %e, "cannot look up images sharing layers"),
    }
    let mut seen = HashSet::from([own]);
    out.retain(|r| seen.insert(r.manifest));
    out
}

/// The prefetch of a mount of `manifest` (named `tag`, when mounted by tag) with trace
/// `profile`: its own trace if it has one, else up to [`MAX_SOURCES`] related traces carried
/// over. Errors are logged: a mount without prefetch still works.
pub async fn plan(
    store: &Store,
    manifest: &Manifest,
    tag: Option<&str>,
    profile: Option<&str>,
) -> PrefetchPlan {
    let own = manifest.id();
    match TraceLog::new(store, own, profile).load().await {
        Ok(Some(trace)) if !trace.entries.is_empty() => {
            let chunks = trace.chunks_for(manifest);
            let source = TraceSource {
                key: trace_dir(&own, profile),
                manifest: own.to_hex(),
                relation: "own".into(),
                entries: trace.entries.len() as u64,
                by_id: chunks.len() as u64,
                by_path: 0,
            };
            return PrefetchPlan {
                chunks,
                sources: vec![source],
            };
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "the stored trace is unreadable; trying related ones"),
    }
    let mut carrier = Carrier::new(manifest);
    let mut mapped: Vec<(u64, u32)> = Vec::new();
    let mut sources = Vec::new();
    for candidate in related(store, manifest, tag).await {
        if sources.len() == MAX_SOURCES {
            break;
        }
        let trace = match TraceLog::new(store, candidate.manifest, profile)
            .load()
            .await
        {
            Ok(Some(trace)) => trace,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(manifest = %candidate.manifest, error = %e, "skipping a related trace");
                continue;
            }
        };
        let (chunks, source) = carrier.carry(&trace, &candidate, profile);
        if chunks.is_empty() {
            continue;
        }
        tracing::info!(
            from = %source.key,
            relation = %source.relation,
            by_id = source.by_id,
            by_path = source.by_path,
            entries = source.entries,
            "prefetching from a related manifest's trace"
        );
        mapped.extend(chunks);
        sources.push(source);
    }
    mapped.sort_by_key(|(at_ms, _)| *at_ms);
    let mut seen = HashSet::new();
    PrefetchPlan {
        chunks: mapped
            .into_iter()
            .map(|(_, chunk)| chunk)
            .filter(|chunk| seen.insert(*chunk))
            .collect(),
        sources,
    }
}

/// Maps entries of other manifests' traces onto one manifest's chunks.
pub struct Carrier<'a> {
    manifest: &'a Manifest,
    by_id: HashMap<ChunkId, u32>,
    files: HashMap<String, Option<Vec<Extent>>>,
}

impl<'a> Carrier<'a> {
    /// A carrier onto `manifest` (its chunk table is read once).
    pub fn new(manifest: &'a Manifest) -> Self {
        let by_id = match manifest.chunks() {
            Ok(chunks) => chunks
                .iter()
                .enumerate()
                .map(|(index, chunk)| (chunk.id, index as u32))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the chunk table; no trace carried over");
                HashMap::new()
            }
        };
        Carrier {
            manifest,
            by_id,
            files: HashMap::new(),
        }
    }

    /// The entries of `trace` (recorded on `from`) that apply here, as (first-read time, chunk
    /// index), and what applied.
    pub fn carry(
        &mut self,
        trace: &Trace,
        from: &Related,
        profile: Option<&str>,
    ) -> (Vec<(u64, u32)>, TraceSource) {
        let mut source = TraceSource {
            key: trace_dir(&from.manifest, profile),
            manifest: from.manifest.to_hex(),
            relation: from.relation.clone(),
            entries: trace.entries.len() as u64,
            ..TraceSource::default()
        };
        let mut out = Vec::new();
        for entry in &trace.entries {
            if let Some(index) = entry
                .id
                .parse::<ChunkId>()
                .ok()
                .and_then(|id| self.by_id.get(&id))
            {
                out.push((entry.at_ms, *index));
                source.by_id += 1;
                continue;
            }
            let now_there = self.chunks_at(&entry.path, entry.offset, entry.len);
            if !now_there.is_empty() {
                source.by_path += 1;
                out.extend(now_there.into_iter().map(|index| (entry.at_ms, index)));
            }
        }
        (out, source)
    }

    /// The chunks holding bytes `offset..offset+len` of regular file `path` here (the whole
    /// file when `len` is 0); none when there is no such file.
    fn chunks_at(&mut self, path: &str, offset: u64, len: u32) -> Vec<u32> {
        let manifest = self.manifest;
        let extents =
            self.files
                .entry(path.to_string())
                .or_insert_with(|| match manifest.lookup(path) {
                    Ok(Some(inode)) if inode.kind == FileKind::Regular => {
                        manifest.extents(&inode).ok()
                    }
                    _ => None,
                });
        let Some(extents) = extents else {
            return Vec::new();
        };
        let end = match len {
            0 => u64::MAX,
            len => offset + len as u64,
        };
        let start = if len == 0 { 0 } else { offset };
        extents
            .iter()
            .filter(|e| e.file_offset < end && e.file_offset + e.len as u64 > start)
            .map(|e| e.chunk)
            .collect()
    }
}
