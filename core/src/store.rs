//! The store: an object store (local folder, S3, GCS, Azure) holding packs, pack indexes, chunk
//! maps, manifests and tags, with the key layout of docs/format.md.
//!
//! Objects are written in an order that keeps the store valid if a writer dies at any point:
//! a pack before its index, every pack before the chunk map, the chunk map before the manifest,
//! the manifest before the tag. A tag therefore only ever names a complete manifest.

use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use crate::chunk_map::{chunk_map_key, ChunkMap};
use crate::manifest::{manifest_key, Manifest};
use crate::pack::{index_key, pack_key, PackIndex, SealedPack};
use crate::{ChunkId, Error, Result};

/// Pack indexes fetched at once when loading them all.
const INDEX_FETCHES_IN_FLIGHT: usize = 32;

/// Options for S3 and S3-compatible stores; unset fields fall back to the usual AWS_* variables.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible server (e.g. `http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Permit plain HTTP (S3-compatible servers on a private network).
    pub allow_http: bool,
}

/// Where the store is and how to reach it.
#[derive(Clone, Debug, Default)]
pub struct StoreConfig {
    /// `s3://bucket[/prefix]`, `gs://...`, `az://...`, `file:///dir` or a plain directory path.
    /// `None` means the embedded default, a local folder ([`crate::dirs::default_store`]).
    pub url: Option<String>,
    /// S3 settings.
    pub s3: S3Options,
    /// Extra wait before every read request, to measure behaviour against a distant store
    /// (benchmarks inject e.g. 20 ms); `None` in normal use.
    pub read_latency: Option<std::time::Duration>,
    /// How requests to a cloud store are bounded and retried.
    pub requests: RequestPolicy,
}

/// Time and retry bounds of every request to a cloud store (S3, GCS, Azure): a request that
/// fails with a 5xx, a reset connection, a body cut short or no answer within `timeout` is
/// retried with exponential back-off (object_store's) up to `retries` times, all within
/// `retry_budget`; then the error names the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestPolicy {
    /// Longest one request (its whole body included) may take.
    pub timeout: std::time::Duration,
    /// Retries of one request.
    pub retries: usize,
    /// Longest all tries of one request may take together.
    pub retry_budget: std::time::Duration,
}

impl Default for RequestPolicy {
    fn default() -> Self {
        RequestPolicy {
            timeout: std::time::Duration::from_secs(30),
            retries: 10,
            retry_budget: std::time::Duration::from_secs(180),
        }
    }
}

impl RequestPolicy {
    /// object_store's client options for this policy.
    fn client_options(&self) -> object_store::ClientOptions {
        object_store::ClientOptions::new()
            .with_timeout(self.timeout)
            .with_connect_timeout(self.timeout.min(std::time::Duration::from_secs(5)))
    }

    /// object_store's retry configuration for this policy.
    fn retry(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            max_retries: self.retries,
            retry_timeout: self.retry_budget,
            ..object_store::RetryConfig::default()
        }
    }
}

impl StoreConfig {
    /// A local folder store.
    pub fn local(path: impl AsRef<FsPath>) -> Self {
        StoreConfig {
            url: Some(path.as_ref().display().to_string()),
            ..StoreConfig::default()
        }
    }
}

/// Requests this process made to the object store, by kind (for metrics and for tests that
/// check a read touched only what it needed).
#[derive(Debug, Default)]
pub struct StoreRequests {
    /// Whole-object reads.
    pub gets: AtomicU64,
    /// Ranged reads (one chunk frame each).
    pub range_gets: AtomicU64,
    /// Bytes received by both kinds of read.
    pub bytes_read: AtomicU64,
    /// Writes.
    pub puts: AtomicU64,
    /// Deletes.
    pub deletes: AtomicU64,
    /// Size queries and listings.
    pub other: AtomicU64,
}

/// One object of a listing: its key (relative to the store), size and last-modified time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// Key relative to the store (e.g. `packs/<hex>.pack`).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch (the object store's clock).
    pub modified_unix_ms: u64,
}

/// One version of a tag: the manifest it named and when it was set to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagVersion {
    /// The manifest.
    pub manifest: ChunkId,
    /// When the tag was pointed at it (milliseconds since the Unix epoch); `None` for a tag
    /// written before tags recorded times (its object's last-modified time stands in).
    pub set_unix_ms: Option<u64>,
}

/// A handle on one store.
#[derive(Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    prefix: String,
    display: String,
    requests: Arc<StoreRequests>,
    read_latency: Option<std::time::Duration>,
    /// Deletes go out as bulk requests of up to 1,000 keys (S3's DeleteObjects).
    bulk_deletes: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

fn config_error(url: &str, reason: impl ToString) -> Error {
    Error::StoreConfig {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

impl Store {
    /// Opens the store a config names (creating a local folder if needed).
    pub fn open(config: &StoreConfig) -> Result<Self> {
        let url = config
            .url
            .clone()
            .unwrap_or_else(|| crate::dirs::default_store().display().to_string());
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let (objects, prefix): (Arc<dyn ObjectStore>, String) = match scheme.as_deref() {
            None | Some("file") => {
                let dir = PathBuf::from(url.strip_prefix("file://").unwrap_or(&url));
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| config_error(&url, e))?;
                (Arc::new(local), String::new())
            }
            Some(scheme) => {
                let parsed = url::Url::parse(&url).map_err(|e| config_error(&url, e))?;
                let prefix = parsed.path().trim_matches('/').to_string();
                let objects: Arc<dyn ObjectStore> = match scheme {
                    "s3" | "s3a" => Arc::new(Self::s3(&url, &config.s3, &config.requests)?),
                    "gs" => Arc::new(
                        object_store::gcp::GoogleCloudStorageBuilder::from_env()
                            .with_url(&url)
                            .with_client_options(config.requests.client_options())
                            .with_retry(config.requests.retry())
                            .build()
                            .map_err(|e| config_error(&url, e))?,
                    ),
                    "az" | "azure" | "abfs" | "abfss" => Arc::new(
                        object_store::azure::MicrosoftAzureBuilder::from_env()
                            .with_url(&url)
                            .with_client_options(config.requests.client_options())
                            .with_retry(config.requests.retry())
                            .build()
                            .map_err(|e| config_error(&url, e))?,
                    ),
                    other => {
                        return Err(config_error(
                            &url,
                            format!("unknown scheme {other:?}: use a directory, file://, s3://, gs:// or az://"),
                        ))
                    }
                };
                (objects, prefix)
            }
        };
        Ok(Store {
            objects,
            prefix,
            display: url,
            requests: Arc::default(),
            read_latency: config.read_latency,
            bulk_deletes: matches!(scheme.as_deref(), Some("s3" | "s3a")),
        })
    }

    /// Counts a read request of one kind and waits the configured extra latency, if any.
    async fn begin_read(&self, kind: &AtomicU64) {
        kind.fetch_add(1, Ordering::Relaxed);
        if let Some(wait) = self.read_latency {
            tokio::time::sleep(wait).await;
        }
    }

    /// Counts the bytes a read received.
    fn received(&self, bytes: Bytes) -> Bytes {
        self.requests
            .bytes_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        bytes
    }

    /// The requests made through this handle (and its clones) so far.
    pub fn requests(&self) -> &StoreRequests {
        &self.requests
    }

    fn s3(
        url: &str,
        options: &S3Options,
        requests: &RequestPolicy,
    ) -> Result<object_store::aws::AmazonS3> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_url(url)
            .with_client_options(requests.client_options())
            .with_retry(requests.retry());
        if let Some(endpoint) = &options.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &options.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if options.allow_http {
            builder = builder.with_allow_http(true);
        }
        builder.build().map_err(|e| config_error(url, e))
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Writes one object (atomically: readers see all of it or nothing).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.requests.puts.fetch_add(1, Ordering::Relaxed);
        self.objects
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| Error::object_store(key, e))
    }

    /// Reads one whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        self.begin_read(&self.requests.gets).await;
        let result = self
            .objects
            .get(&self.path(key))
            .await
            .map_err(|e| Error::object_store(key, e))?;
        let bytes = result
            .bytes()
            .await
            .map_err(|e| Error::object_store(key, e))?;
        Ok(self.received(bytes))
    }

    /// Reads a byte range of one object.
    pub async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        self.begin_read(&self.requests.range_gets).await;
        let bytes = self
            .objects
            .get_range(&self.path(key), range)
            .await
            .map_err(|e| Error::object_store(key, e))?;
        Ok(self.received(bytes))
    }

    /// The size of one object.
    pub async fn size(&self, key: &str) -> Result<u64> {
        self.requests.other.fetch_add(1, Ordering::Relaxed);
        let meta = self
            .objects
            .head(&self.path(key))
            .await
            .map_err(|e| Error::object_store(key, e))?;
        Ok(meta.size)
    }

    /// Lists keys (relative to the store) under `dir` with their sizes.
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        Ok(self
            .list_objects(dir)
            .await?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect())
    }

    /// Lists the objects under `dir` (`""` for the whole store) with size and modification time.
    pub async fn list_objects(&self, dir: &str) -> Result<Vec<ListedObject>> {
        self.requests.other.fetch_add(1, Ordering::Relaxed);
        let prefix = (!dir.is_empty() || !self.prefix.is_empty()).then(|| self.path(dir));
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let metas: Vec<_> = self
            .objects
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| Error::object_store(dir, e))?;
        Ok(metas
            .into_iter()
            .map(|m| ListedObject {
                key: m.location.as_ref()[strip..].to_string(),
                size: m.size,
                modified_unix_ms: m.last_modified.timestamp_millis().max(0) as u64,
            })
            .collect())
    }

    /// Writes a sealed pack, then its index.
    pub async fn put_pack(&self, pack: &SealedPack) -> Result<()> {
        self.put(&pack_key(&pack.id), pack.bytes.clone()).await?;
        self.put(&index_key(&pack.id), pack.index.clone()).await
    }

    /// Reads every pack index. Indexes that fail to decode, or whose pack is not in the store
    /// (a pack deleted by `thaw gc` goes after its index, but a store can be damaged), are
    /// returned as errors beside the good ones, so a caller can skip (and report) them instead
    /// of trusting them.
    pub async fn load_pack_indexes(&self) -> Result<(Vec<PackIndex>, Vec<Error>)> {
        let keys = self.list("packs").await?;
        let mut good = Vec::new();
        let (wanted, mut bad) = Self::indexes_with_packs(&keys);
        let fetches = wanted.into_iter().map(|k| {
            let store = self.clone();
            async move {
                let bytes = store.get(&k).await;
                (k, bytes)
            }
        });
        let results: Vec<_> = futures::stream::iter(fetches)
            .buffer_unordered(INDEX_FETCHES_IN_FLIGHT)
            .collect()
            .await;
        for (key, bytes) in results {
            match bytes.and_then(|b| PackIndex::decode(&b, &key)) {
                Ok(index) if index_key(&index.pack) == key => good.push(index),
                Ok(index) => bad.push(Error::corrupt(
                    key.as_str(),
                    24,
                    format!("index names pack {}, not its own key", index.pack),
                )),
                Err(e) => bad.push(e),
            }
        }
        Ok((good, bad))
    }

    /// Of a listing of `packs/`, the index keys whose pack is listed too, and an error for
    /// each index whose pack is not.
    fn indexes_with_packs(keys: &[(String, u64)]) -> (Vec<String>, Vec<Error>) {
        let packs: std::collections::HashSet<&str> = keys
            .iter()
            .filter_map(|(k, _)| k.strip_suffix(".pack"))
            .collect();
        let mut wanted = Vec::new();
        let mut bad = Vec::new();
        for (key, _) in keys {
            let Some(stem) = key.strip_suffix(".idx") else {
                continue;
            };
            if packs.contains(stem) {
                wanted.push(key.clone());
            } else {
                bad.push(Error::NotFound {
                    object: format!("{stem}.pack (named by index {key})"),
                });
            }
        }
        (wanted, bad)
    }

    /// Stores manifest bytes under their id.
    pub async fn put_manifest(&self, id: &ChunkId, bytes: Bytes) -> Result<()> {
        self.put(&manifest_key(id), bytes).await
    }

    /// Fetches a manifest and checks it against its id.
    pub async fn get_manifest(&self, id: &ChunkId) -> Result<Manifest> {
        let bytes = self.get(&manifest_key(id)).await?;
        Manifest::open_verified(bytes, id)
    }

    /// Stores a chunk map.
    pub async fn put_chunk_map(&self, map: &ChunkMap) -> Result<()> {
        self.put(&chunk_map_key(&map.manifest), map.encode()).await
    }

    /// Fetches the chunk map of `manifest` and checks it belongs to it.
    pub async fn get_chunk_map(&self, manifest: &Manifest) -> Result<ChunkMap> {
        let key = chunk_map_key(&manifest.id());
        let map = ChunkMap::decode(&self.get(&key).await?, &key)?;
        map.check_matches(manifest, &key)?;
        Ok(map)
    }

    /// Points tag `name` at `manifest` (last writer wins), keeping the manifests it named
    /// before as its history (newest first, at most [`TAG_HISTORY`]): a tag object is one
    /// line per version, `<64-hex id> <unix ms set>`, the current one first. Re-pointing a tag
    /// at the manifest it already names changes nothing.
    pub async fn set_tag(&self, name: &str, manifest: &ChunkId) -> Result<()> {
        validate_tag(name)?;
        let mut versions = match self.tag_versions(name).await {
            Ok(versions) => versions,
            Err(e) if e.is_not_found() => Vec::new(),
            // An unreadable tag is replaced: its history is a hint, the new id is what counts.
            Err(e) => {
                tracing::warn!(tag = name, error = %e, "replacing an unreadable tag");
                Vec::new()
            }
        };
        if versions.first().map(|v| v.manifest) == Some(*manifest) {
            return Ok(());
        }
        versions.retain(|v| v.manifest != *manifest);
        versions.insert(
            0,
            TagVersion {
                manifest: *manifest,
                set_unix_ms: Some(unix_ms_now()),
            },
        );
        versions.truncate(TAG_HISTORY + 1);
        self.put_tag_versions(name, &versions).await
    }

    /// Writes tag `name` with exactly `versions` (current first): for `thaw tag mv`, which
    /// keeps a tag's history and times under its new name.
    pub async fn put_tag_versions(&self, name: &str, versions: &[TagVersion]) -> Result<()> {
        validate_tag(name)?;
        let text: String = versions
            .iter()
            .map(|v| match v.set_unix_ms {
                Some(ms) => format!("{} {ms}\n", v.manifest.to_hex()),
                None => format!("{}\n", v.manifest.to_hex()),
            })
            .collect();
        self.put(&format!("tags/{name}"), Bytes::from(text)).await
    }

    /// The manifest a tag names.
    pub async fn get_tag(&self, name: &str) -> Result<ChunkId> {
        Ok(self.tag_versions(name).await?[0].manifest)
    }

    /// The manifests tag `name` named before its current one, newest first (the versions a
    /// new version of an image or model follows).
    pub async fn tag_history(&self, name: &str) -> Result<Vec<ChunkId>> {
        Ok(self
            .tag_versions(name)
            .await?
            .into_iter()
            .skip(1)
            .map(|v| v.manifest)
            .collect())
    }

    /// Every version of tag `name`: the current one first, then its history.
    pub async fn tag_versions(&self, name: &str) -> Result<Vec<TagVersion>> {
        validate_tag(name)?;
        let key = format!("tags/{name}");
        parse_tag(&key, &self.get(&key).await?)
    }

    /// Removes tag `name`; an unknown tag is an error. The manifest and its chunks stay (other
    /// tags may share them).
    pub async fn delete_tag(&self, name: &str) -> Result<()> {
        validate_tag(name)?;
        let key = format!("tags/{name}");
        self.size(&key).await?;
        self.delete(&key).await
    }

    /// Deletes object `key` (a missing object is not an error: the store may be shared, and
    /// another node may have deleted it first).
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.requests.deletes.fetch_add(1, Ordering::Relaxed);
        match self.objects.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::object_store(key, e)),
        }
    }

    /// Deletes many objects, in bulk requests where the store has them (S3: 1,000 keys a
    /// request); missing objects are not an error. The first failure is returned.
    pub async fn delete_many(&self, keys: &[String]) -> Result<()> {
        let requests = if self.bulk_deletes {
            keys.len().div_ceil(1000)
        } else {
            keys.len()
        };
        self.requests
            .deletes
            .fetch_add(requests as u64, Ordering::Relaxed);
        let paths: Vec<object_store::Result<Path>> =
            keys.iter().map(|k| Ok(self.path(k))).collect();
        let mut results = self
            .objects
            .delete_stream(futures::stream::iter(paths).boxed());
        while let Some(result) = results.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::object_store("(bulk delete)", e)),
            }
        }
        Ok(())
    }

    /// Every tag with the manifest it names, sorted by name.
    pub async fn list_tags(&self) -> Result<Vec<(String, ChunkId)>> {
        let mut out = Vec::new();
        for (key, _) in self.list("tags").await? {
            let name = key.trim_start_matches("tags/").to_string();
            out.push((name.clone(), self.get_tag(&name).await?));
        }
        out.sort();
        Ok(out)
    }

    /// Resolves a tag name or a manifest id (64 hex) to a manifest id present in the store.
    pub async fn resolve(&self, name: &str) -> Result<ChunkId> {
        if validate_tag(name).is_ok() {
            match self.get_tag(name).await {
                Ok(id) => return Ok(id),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        if let Ok(id) = name.parse::<ChunkId>() {
            match self.size(&manifest_key(&id)).await {
                Ok(_) => return Ok(id),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::UnknownName(name.to_string()))
    }

    /// Resolves a name and opens its manifest and chunk map.
    pub async fn open_manifest(&self, name: &str) -> Result<(Manifest, ChunkMap)> {
        let id = self.resolve(name).await?;
        let manifest = self.get_manifest(&id).await?;
        let map = self.get_chunk_map(&manifest).await?;
        Ok((manifest, map))
    }
}

/// Previous manifests a tag remembers ([`Store::tag_history`]).
pub const TAG_HISTORY: usize = 16;

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses a tag object (`key` names it in errors): one version per line, `<64 hex>` optionally
/// followed by a space and the unix milliseconds it was set (older tags have no time).
pub fn parse_tag(key: &str, bytes: &[u8]) -> Result<Vec<TagVersion>> {
    let text = std::str::from_utf8(bytes).unwrap_or_default();
    let mut versions = Vec::new();
    let mut offset = 0u64;
    for line in text.split_inclusive('\n') {
        let mut fields = line.split_whitespace();
        if let Some(id) = fields.next() {
            let bad = |what| Error::corrupt(key, offset, what);
            let manifest = id
                .parse()
                .map_err(|_| bad("tag line does not start with a 64-hex manifest id"))?;
            let set_unix_ms = match fields.next() {
                None => None,
                Some(ms) => Some(
                    ms.parse()
                        .map_err(|_| bad("tag line's time is not unix milliseconds"))?,
                ),
            };
            versions.push(TagVersion {
                manifest,
                set_unix_ms,
            });
        }
        offset += line.len() as u64;
    }
    if versions.is_empty() {
        return Err(Error::corrupt(
            key,
            0,
            "tag does not hold a 64-hex manifest id",
        ));
    }
    Ok(versions)
}

/// Checks a tag name: 1-200 characters of `A-Z a-z 0-9 . _ - : @ + /`, no empty, `.` or `..`
/// component.
pub fn validate_tag(name: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidTag {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 200 {
        return Err(invalid("must be 1 to 200 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-:@+/".contains(c))
    {
        return Err(invalid(
            "only letters, digits and . _ - : @ + / are allowed",
        ));
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(invalid("empty, '.' or '..' path component"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_names_are_checked() {
        for ok in ["python", "models/llama:3.1", "a.b_c-d@e+f"] {
            validate_tag(ok).unwrap();
        }
        for bad in ["", "../x", "a//b", "a b", "/abs", "x/.", "ü"] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn local_store_round_trips_tags_and_reports_missing_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::local(dir.path().join("s"))).unwrap();
        let id = ChunkId::of(b"m");
        store.set_tag("t/one", &id).await.unwrap();
        assert_eq!(store.get_tag("t/one").await.unwrap(), id);
        assert_eq!(
            store.list_tags().await.unwrap(),
            vec![("t/one".to_string(), id)]
        );
        assert!(store.tag_history("t/one").await.unwrap().is_empty());
        assert!(store.get("nope").await.unwrap_err().is_not_found());
        assert!(matches!(
            store.resolve("missing").await,
            Err(Error::UnknownName(_))
        ));
    }

    #[tokio::test]
    async fn a_tag_remembers_what_it_named_before_newest_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::local(dir.path().join("s"))).unwrap();
        let ids: Vec<ChunkId> = (0..20u8).map(|i| ChunkId::of(&[i])).collect();
        store.set_tag("app", &ids[0]).await.unwrap();
        store.set_tag("app", &ids[1]).await.unwrap();
        store.set_tag("app", &ids[1]).await.unwrap();
        assert_eq!(store.get_tag("app").await.unwrap(), ids[1]);
        assert_eq!(store.tag_history("app").await.unwrap(), vec![ids[0]]);
        // Back to an earlier version: it moves to the front, not listed twice.
        store.set_tag("app", &ids[0]).await.unwrap();
        assert_eq!(store.tag_history("app").await.unwrap(), vec![ids[1]]);
        for id in &ids[2..] {
            store.set_tag("app", id).await.unwrap();
        }
        let history = store.tag_history("app").await.unwrap();
        assert_eq!(history.len(), TAG_HISTORY);
        assert_eq!(history[0], ids[18]);
        // A tag written by an older thaw (one id) still reads.
        store
            .put("tags/old", Bytes::from(format!("{}\n", ids[3].to_hex())))
            .await
            .unwrap();
        assert_eq!(store.get_tag("old").await.unwrap(), ids[3]);
        store.put("tags/bad", Bytes::from("x\n")).await.unwrap();
        let err = store.get_tag("bad").await.unwrap_err().to_string();
        assert!(err.contains("tags/bad"), "{err}");
    }
}
