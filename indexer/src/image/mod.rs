//! Container images into thaw: a registry image, an OCI layout or a `docker save` tarball is
//! resolved to one platform, each layer is streamed (never unpacked to disk) into a layer tree
//! whose files are chunked into packs, and the layers are flattened into one manifest, with the
//! image config (env, entrypoint, cmd, workdir, user) kept as an annotation.
//!
//! Layers are stored once: each layer tree is itself a manifest, found again by the layer's diff
//! id (`layers/sha256/HEX` in the store), so a second image sharing a base layer reads only its
//! own layers. The manifest id depends only on the flattened tree and the config's runtime
//! fields, so the same image gives the same id from all three sources.

mod digest;
pub mod flatten;
pub mod layer;
pub mod reference;
pub mod source;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use thaw_core::chunk_map::ChunkMap;
use thaw_core::manifest::Manifest;
use thaw_core::store::Store;
use thaw_core::ChunkId;

use crate::sink::{seal_manifest, with_sink, KnownChunks, StoreWrites, Written};
use crate::{IndexError, IndexOptions, Progress};
pub use reference::{ImageRef, PlatformSpec};
pub use source::RegistryOptions;

/// Annotation holding the image config's runtime fields (JSON).
pub use thaw_core::manifest::IMAGE_CONFIG_ANNOTATION as CONFIG_ANNOTATION;
/// Annotation of a layer tree: its hard links into lower layers (JSON `[[path_hex, target_hex]]`).
const LINKS_ANNOTATION: &str = "org.thaw.layer.links";

/// What `thaw index image` was asked.
#[derive(Clone, Debug, Default)]
pub struct ImageOptions {
    /// The platform to pick from an image index.
    pub platform: PlatformSpec,
    /// Registry credentials and transport.
    pub registry: RegistryOptions,
}

/// What indexing an image did.
#[derive(Clone, Debug)]
pub struct ImageReport {
    /// The flattened manifest's id.
    pub manifest: ChunkId,
    /// Layers in the image.
    pub layers: usize,
    /// Layers already in the store (not read again).
    pub layers_reused: usize,
    /// Layer tar entries read in this run.
    pub entries_read: u64,
    /// Bytes of file content read from new layers.
    pub bytes_read: u64,
    /// Distinct chunks in the flattened manifest.
    pub chunks: u64,
    /// What was added to the store.
    pub writes: StoreWrites,
}

fn layer_key(diff_id: &str) -> String {
    thaw_core::related::layer_pointer_key(diff_id.trim_start_matches("sha256:"))
}

/// The config fields a runtime uses, in a fixed order, so the same image read from any source
/// gives the same annotation (sources may re-serialise the config).
fn runtime_config(config: &serde_json::Value) -> String {
    let field = |path: &str| {
        config
            .pointer(path)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    let sorted = |v: serde_json::Value| -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let map: BTreeMap<String, serde_json::Value> = map.into_iter().collect();
                serde_json::to_value(map).expect("map serialises")
            }
            other => other,
        }
    };
    #[derive(serde::Serialize)]
    struct RuntimeConfig {
        os: serde_json::Value,
        architecture: serde_json::Value,
        variant: serde_json::Value,
        user: serde_json::Value,
        env: serde_json::Value,
        entrypoint: serde_json::Value,
        cmd: serde_json::Value,
        working_dir: serde_json::Value,
        exposed_ports: serde_json::Value,
        volumes: serde_json::Value,
        labels: serde_json::Value,
        stop_signal: serde_json::Value,
        diff_ids: serde_json::Value,
    }
    let rc = RuntimeConfig {
        os: field("/os"),
        architecture: field("/architecture"),
        variant: field("/variant"),
        user: field("/config/User"),
        env: field("/config/Env"),
        entrypoint: field("/config/Entrypoint"),
        cmd: field("/config/Cmd"),
        working_dir: field("/config/WorkingDir"),
        exposed_ports: sorted(field("/config/ExposedPorts")),
        volumes: sorted(field("/config/Volumes")),
        labels: sorted(field("/config/Labels")),
        stop_signal: field("/config/StopSignal"),
        diff_ids: field("/rootfs/diff_ids"),
    };
    serde_json::to_string(&rc).expect("config serialises")
}

/// A stored layer tree for `diff_id`, if a previous run indexed it and it is still whole.
fn stored_layer(
    store: &Store,
    runtime: &tokio::runtime::Handle,
    layer: &source::Layer,
) -> Option<flatten::StoredLayer> {
    let found = runtime.block_on(async {
        let pointer = store.get(&layer_key(&layer.diff_id)).await.ok()?;
        let id = thaw_core::related::parse_layer_pointer(&pointer)?;
        let manifest = store.get_manifest(&id).await.ok()?;
        let map = store.get_chunk_map(&manifest).await.ok()?;
        Some((manifest, map))
    });
    let (manifest, map) = found?;
    let external_links = decode_links(&manifest)?;
    Some(flatten::StoredLayer {
        name: layer.name.clone(),
        manifest,
        map,
        external_links,
    })
}

fn decode_links(manifest: &Manifest) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let Some(text) = manifest.annotations().get(LINKS_ANNOTATION) else {
        return Some(Vec::new());
    };
    let pairs: Vec<(String, String)> = serde_json::from_str(text).ok()?;
    pairs
        .into_iter()
        .map(|(p, t)| Some((hex::decode(p).ok()?, hex::decode(t).ok()?)))
        .collect()
}

/// Streams the layers `missing` (indexes into `layers`) into layer trees, several at once (up
/// to `threads`; each layer is one sequential stream, so layers are the unit of parallelism).
/// The first failure, in layer order, is returned and stops the others.
#[allow(clippy::too_many_arguments)]
fn index_layers(
    source: &dyn source::ImageSource,
    layers: &[source::Layer],
    missing: &[usize],
    threads: usize,
    chunker: thaw_core::chunker::Chunker,
    sink: &crate::sink::ChunkSink,
    abort: &AtomicBool,
    progress: &dyn Progress,
) -> Result<Vec<(usize, layer::LayerTree)>, IndexError> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, missing.len().max(1)) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= missing.len() || abort.load(Ordering::Relaxed) {
                    break;
                }
                let i = missing[k];
                let result = source
                    .open_layer(i)
                    .and_then(|blob| layer::index_layer(blob, &layers[i], chunker, sink, progress));
                if result.is_err() {
                    abort.store(true, Ordering::Relaxed);
                }
                results.lock().expect("layer results").push((i, result));
            });
        }
    });
    let mut results = results.into_inner().expect("layer results");
    results.sort_by_key(|(i, _)| *i);
    results
        .into_iter()
        .map(|(i, result)| result.map(|tree| (i, tree)))
        .collect()
}

/// The tree of the stored layers `diff_ids` (bottom first) laid over each other, as a
/// manifest in `store` (content-addressed: the same layers always give the same id). For a
/// containerd snapshot whose layers thaw holds but that no indexed image ends with (a base an
/// unindexed image builds on). Fails naming the first layer the store does not hold.
pub fn flatten_stored_layers(
    store: &Store,
    runtime: &tokio::runtime::Handle,
    diff_ids: &[String],
    options: &IndexOptions,
) -> Result<Manifest, IndexError> {
    let layers = diff_ids
        .iter()
        .map(|diff_id| {
            let layer = source::Layer {
                name: diff_id.clone(),
                digest: None,
                diff_id: diff_id.clone(),
            };
            stored_layer(store, runtime, &layer).ok_or_else(|| IndexError::Image {
                image: diff_id.clone(),
                reason: "the store holds no whole tree of this layer".into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let chunker = options.chunker.unwrap_or_default();
    crate::with_write_lock(store, runtime, "flatten layers", options, |_| {
        let (mut builder, locations) = flatten::flatten(chunker, &layers)?;
        builder.annotate("org.thaw.source.kind", "layers");
        builder.annotate(
            thaw_core::related::IMAGE_LAYERS_ANNOTATION,
            serde_json::to_string(diff_ids).expect("strings"),
        );
        let (manifest, _) =
            seal_manifest(store, runtime, builder, &Written::default(), &locations)?;
        Ok(manifest)
    })
}

/// Indexes `image` into `store`: new layers are streamed and chunked, known ones reused, all of
/// them flattened into one manifest; `tag` is set last.
pub fn index_image(
    store: &Store,
    runtime: &tokio::runtime::Handle,
    image: &ImageRef,
    tag: Option<&str>,
    options: &IndexOptions,
    image_options: &ImageOptions,
    progress: &dyn Progress,
) -> Result<ImageReport, IndexError> {
    if let Some(tag) = tag {
        thaw_core::store::validate_tag(tag)?;
    }
    let job = ImageJob {
        store,
        runtime,
        image,
        tag,
        options,
        image_options,
        progress,
    };
    crate::with_write_lock(store, runtime, "index image", options, |lock| {
        index_image_locked(&job, lock)
    })
}

/// What [`index_image`] was asked to do.
struct ImageJob<'a> {
    store: &'a Store,
    runtime: &'a tokio::runtime::Handle,
    image: &'a ImageRef,
    tag: Option<&'a str>,
    options: &'a IndexOptions,
    image_options: &'a ImageOptions,
    progress: &'a dyn Progress,
}

/// [`index_image`] once the shared store lock is held.
fn index_image_locked(
    job: &ImageJob<'_>,
    lock: &thaw_core::lock::StoreLock,
) -> Result<ImageReport, IndexError> {
    let ImageJob {
        store,
        runtime,
        image,
        tag,
        options,
        image_options,
        progress,
    } = *job;
    let chunker = options.chunker.unwrap_or_default();
    let mut source = source::open(image, &image_options.registry, runtime)?;
    let resolved = source.resolve(&image_options.platform)?;
    let mut stored: Vec<Option<flatten::StoredLayer>> = resolved
        .layers
        .iter()
        .map(|l| stored_layer(store, runtime, l))
        .collect();
    let reused = stored.iter().filter(|s| s.is_some()).count();
    let known = KnownChunks::load(store, runtime)?;
    progress.start("indexing", 0);
    let abort = AtomicBool::new(false);
    let missing: Vec<usize> = (0..stored.len()).filter(|&i| stored[i].is_none()).collect();
    let (trees, written) = with_sink(store, runtime, &known, options, &abort, |sink| {
        index_layers(
            &*source,
            &resolved.layers,
            &missing,
            options.threads,
            chunker,
            sink,
            &abort,
            progress,
        )
    })?;
    progress.finish();
    let (mut entries_read, mut bytes_read) = (0, 0);
    for (i, tree) in trees {
        entries_read += tree.entries;
        bytes_read += tree.bytes;
        let mut builder = tree.builder;
        if !tree.external_links.is_empty() {
            let pairs: Vec<(String, String)> = tree
                .external_links
                .iter()
                .map(|(p, t)| (hex::encode(p), hex::encode(t)))
                .collect();
            builder.annotate(
                LINKS_ANNOTATION,
                serde_json::to_string(&pairs).expect("links"),
            );
        }
        builder.annotate("org.thaw.source.kind", "image-layer");
        let (manifest, map) = seal_manifest(store, runtime, builder, &written, &known.locations)?;
        runtime.block_on(store.put(
            &layer_key(&resolved.layers[i].diff_id),
            bytes::Bytes::from(manifest.id().to_hex()),
        ))?;
        stored[i] = Some(flatten::StoredLayer {
            name: resolved.layers[i].name.clone(),
            manifest,
            map,
            external_links: tree.external_links,
        });
    }
    let layers: Vec<flatten::StoredLayer> = stored
        .into_iter()
        .map(|s| s.expect("every layer"))
        .collect();
    let (mut builder, locations) = flatten::flatten(chunker, &layers)?;
    builder.annotate("org.thaw.source.kind", "image");
    builder.annotate(CONFIG_ANNOTATION, runtime_config(&resolved.config));
    let diff_ids: Vec<&str> = resolved.layers.iter().map(|l| l.diff_id.as_str()).collect();
    builder.annotate(
        thaw_core::related::IMAGE_LAYERS_ANNOTATION,
        serde_json::to_string(&diff_ids).expect("strings"),
    );
    let (manifest, _map): (Manifest, ChunkMap) =
        seal_manifest(store, runtime, builder, &Written::default(), &locations)?;
    // Images sharing a layer find each other (their access traces seed each other's prefetch).
    runtime.block_on(thaw_core::related::record_layer_users(store, &manifest))?;
    if let Some(tag) = tag {
        crate::commit_tag(store, runtime, lock, tag, &manifest.id())?;
    }
    Ok(ImageReport {
        manifest: manifest.id(),
        layers: layers.len(),
        layers_reused: reused,
        entries_read,
        bytes_read,
        chunks: manifest.chunk_count() as u64,
        writes: written.summary(),
    })
}
