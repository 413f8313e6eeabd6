//! The weight pipeline end to end on host memory: a model manifest built in the test (chunks
//! that straddle tensors, a chunk shared by two places, a hole, two files, padding between
//! tensors), chunks served by an in-memory source through a real `TieredStore` (so every chunk is
//! verified), streamed by `load_model` on several lanes, compared byte for byte with the files.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use thaw_core::chunk_map::ChunkMap;
use thaw_core::chunker::Chunker;
use thaw_core::manifest::{ExtentSpec, FileKind, Manifest, ManifestBuilder, NodeMeta};
use thaw_core::pack::ChunkRef;
use thaw_core::tier::{ChunkSource, TieredStore};
use thaw_core::ChunkId;
use thaw_weights::{load_model, HostBackend, LoadOptions, Plan, WeightsError};

/// Chunks by id; `corrupt` serves a flipped byte for one id.
struct MapSource {
    chunks: HashMap<ChunkId, Bytes>,
    corrupt: Option<ChunkId>,
    fetches: AtomicU64,
}

#[async_trait]
impl ChunkSource for MapSource {
    fn name(&self) -> &str {
        "test-map"
    }

    async fn fetch(&self, chunk: &ChunkRef) -> thaw_core::Result<Option<Bytes>> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let data = self.chunks.get(&chunk.id).cloned();
        Ok(match (data, self.corrupt == Some(chunk.id)) {
            (Some(d), true) => {
                let mut v = d.to_vec();
                v[0] ^= 1;
                Some(Bytes::from(v))
            }
            (d, _) => d,
        })
    }
}

fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

struct Tensor {
    name: &'static str,
    dtype: &'static str,
    shape: Vec<u64>,
    data: Vec<u8>,
}

/// A safetensors file with `gap` bytes of padding between tensors.
fn safetensors_file(tensors: &[Tensor], gap: usize) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for t in tensors {
        let begin = data.len();
        data.extend_from_slice(&t.data);
        header.insert(
            t.name.into(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [begin, data.len()]}),
        );
        data.extend(std::iter::repeat_n(0xee, gap));
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&json);
    file.extend_from_slice(&data);
    file
}

/// Cuts `file` into `chunk`-byte pieces; pieces that are all zero become holes.
fn extents(file: &[u8], chunk: usize, chunks: &mut HashMap<ChunkId, Bytes>) -> Vec<ExtentSpec> {
    let mut out = Vec::new();
    for (i, piece) in file.chunks(chunk).enumerate() {
        if piece.iter().all(|b| *b == 0) {
            continue;
        }
        let id = ChunkId::of(piece);
        chunks.insert(id, Bytes::copy_from_slice(piece));
        out.push(ExtentSpec {
            file_offset: (i * chunk) as u64,
            chunk: id,
            chunk_raw_len: piece.len() as u32,
            chunk_offset: 0,
            len: piece.len() as u32,
        });
    }
    out
}

struct Model {
    manifest: Manifest,
    map: ChunkMap,
    chunks: HashMap<ChunkId, Bytes>,
    /// (file, tensor) -> bytes
    expected: HashMap<(String, String), Vec<u8>>,
}

fn model() -> Model {
    let repeated = noise("repeated", 1000);
    let a = vec![
        Tensor {
            name: "embed.weight",
            dtype: "BF16",
            shape: vec![3000],
            data: noise("embed", 6000),
        },
        // Two identical 1000-byte runs aligned to the 1000-byte chunks: one chunk, used twice.
        Tensor {
            name: "twice",
            dtype: "U8",
            shape: vec![2, 1000],
            data: [repeated.clone(), repeated].concat(),
        },
        // 4000 zero bytes: at least two whole chunks of zeros, stored as a hole.
        Tensor {
            name: "zeros",
            dtype: "F32",
            shape: vec![1000],
            data: vec![0; 4000],
        },
        Tensor {
            name: "bias",
            dtype: "F16",
            shape: vec![5],
            data: noise("bias", 10),
        },
        Tensor {
            name: "empty",
            dtype: "F32",
            shape: vec![0, 4],
            data: vec![],
        },
    ];
    let b = vec![Tensor {
        name: "head.weight",
        dtype: "F32",
        shape: vec![7, 333],
        data: noise("head", 7 * 333 * 4),
    }];
    let mut chunks = HashMap::new();
    let mut builder = ManifestBuilder::new(Chunker::default(), NodeMeta::directory(0o755));
    builder
        .insert(b"model", NodeMeta::directory(0o755))
        .unwrap();
    let mut expected = HashMap::new();
    for (path, tensors, gap) in [
        ("model/a.safetensors", &a, 0),
        ("model/b.safetensors", &b, 13),
    ] {
        let mut file = safetensors_file(tensors, gap);
        // Align the first tensor to the 1000-byte chunk grid so "twice" repeats a whole chunk.
        if path.ends_with("a.safetensors") {
            let header = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
            let pad = (1000 - (8 + header) % 1000) % 1000;
            let mut json = file[8..8 + header].to_vec();
            json.extend(std::iter::repeat_n(b' ', pad));
            let mut padded = (json.len() as u64).to_le_bytes().to_vec();
            padded.extend_from_slice(&json);
            padded.extend_from_slice(&file[8 + header..]);
            file = padded;
        }
        for t in tensors.iter() {
            expected.insert((path.to_string(), t.name.to_string()), t.data.clone());
        }
        let meta = NodeMeta {
            kind: FileKind::Regular,
            mode: 0o100644,
            size: file.len() as u64,
            extents: extents(&file, 1000, &mut chunks),
            ..NodeMeta::directory(0)
        };
        builder.insert(path.as_bytes(), meta).unwrap();
    }
    let (id, bytes) = builder.finish().unwrap();
    let manifest = Manifest::open_verified(bytes, &id).unwrap();
    let map = ChunkMap {
        manifest: id,
        locations: Vec::new(),
    };
    Model {
        manifest,
        map,
        chunks,
        expected,
    }
}

fn tiers(model: &Model, corrupt: Option<ChunkId>) -> (TieredStore, Arc<MapSource>) {
    let source = Arc::new(MapSource {
        chunks: model.chunks.clone(),
        corrupt,
        fetches: AtomicU64::new(0),
    });
    (TieredStore::new(Vec::new(), source.clone()), source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_every_tensor_byte_for_byte_and_fetches_each_chunk_once() {
    let model = model();
    let (tiers, source) = tiers(&model, None);
    for lanes in [1, 3] {
        let options = LoadOptions {
            fetch_concurrency: 4,
            lanes,
            alignment: 256,
        };
        let before = source.fetches.load(Ordering::Relaxed);
        let loaded = load_model(
            &tiers,
            &model.manifest,
            &model.map,
            "test-model",
            Arc::new(HostBackend),
            &options,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            loaded.plan.files,
            ["model/a.safetensors", "model/b.safetensors"]
        );
        assert_eq!(loaded.plan.tensors.len(), 6);
        for t in &loaded.plan.tensors {
            assert_eq!(t.offset % 256, 0, "{} is not aligned", t.name);
            let want = &model.expected[&(loaded.plan.files[t.file].clone(), t.name.clone())];
            assert_eq!(&loaded.read(t).unwrap(), want, "tensor {}", t.name);
        }
        // The repeated chunk is one job with two segments; the zero chunks are holes.
        let shared = loaded
            .plan
            .jobs
            .iter()
            .find(|j| j.segments.len() >= 2 && j.chunk.raw_len == 1000)
            .expect("a chunk feeding two places");
        assert_ne!(shared.segments[0].dst, shared.segments[1].dst);
        assert!(
            !loaded.plan.zeroed.is_empty(),
            "the zero tensor's chunks are a hole"
        );
        let distinct = loaded.plan.jobs.len() as u64;
        let fetched = source.fetches.load(Ordering::Relaxed) - before;
        // Each file's header read fetches its first chunk (there is no cache tier here); the
        // tensors need each distinct chunk exactly once.
        assert_eq!(
            fetched,
            distinct + 2,
            "{fetched} fetches for {distinct} chunks"
        );
        assert_eq!(
            loaded.report.tensor_bytes,
            model.expected.values().map(|v| v.len() as u64).sum::<u64>()
        );
        assert_eq!(loaded.report.chunks as u64, distinct);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_fails_the_load_naming_the_chunk() {
    let model = model();
    let plan_tiers = tiers(&model, None).0;
    let files = thaw_weights::model::model_files(&plan_tiers, &model.manifest, &model.map, "m")
        .await
        .unwrap();
    let plan = Plan::build(&model.manifest, &model.map, &files, 256).unwrap();
    // A tensor chunk that is not the first chunk of a file (headers read those).
    let victim = plan.jobs.last().unwrap().chunk.id;
    let (tiers, _) = tiers(&model, Some(victim));
    let err = load_model(
        &tiers,
        &model.manifest,
        &model.map,
        "m",
        Arc::new(HostBackend),
        &LoadOptions::default(),
        None,
    )
    .await
    .err()
    .expect("a corrupt chunk must fail the load");
    let text = err.to_string();
    assert!(matches!(err, WeightsError::Core(_)), "{text}");
    assert!(text.contains(&victim.to_hex()[..16]), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_without_safetensors_is_refused_by_name() {
    let mut builder = ManifestBuilder::new(Chunker::default(), NodeMeta::directory(0o755));
    builder.insert(b"etc", NodeMeta::directory(0o755)).unwrap();
    let (id, bytes) = builder.finish().unwrap();
    let manifest = Manifest::open_verified(bytes, &id).unwrap();
    let map = ChunkMap {
        manifest: id,
        locations: Vec::new(),
    };
    let tiers = TieredStore::new(
        Vec::new(),
        Arc::new(MapSource {
            chunks: HashMap::new(),
            corrupt: None,
            fetches: AtomicU64::new(0),
        }),
    );
    let err = load_model(
        &tiers,
        &manifest,
        &map,
        "not-a-model",
        Arc::new(HostBackend),
        &LoadOptions::default(),
        None,
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with("not-a-model: no .safetensors files"),
        "{err}"
    );
}
