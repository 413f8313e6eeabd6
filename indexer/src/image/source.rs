//! Image sources: a registry (through oci-client), an OCI image layout folder, or a `docker save`
//! tarball, each resolved to the image config and its layers, whose blobs open as plain readers.
//!
//! Manifests and configs from a layout or an archive are checked against their digests here;
//! layer blobs are checked as they stream ([`super::layer`]), against the manifest's digest and
//! the config's `rootfs.diff_ids`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::digest::{sha256, sha256_hex};
use super::reference::{ImageRef, PlatformSpec};
use crate::IndexError;

/// Largest manifest, index or config accepted.
const MAX_JSON_BYTES: u64 = 16 << 20;

/// One layer of the resolved image.
#[derive(Clone, Debug)]
pub struct Layer {
    /// How errors name it: the blob digest, else the diff id.
    pub name: String,
    /// The blob's digest, when the image declares one (registries and layouts).
    pub digest: Option<String>,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
}

/// An image resolved to one platform.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The image config as stored.
    pub config: serde_json::Value,
    /// Its layers, bottom first.
    pub layers: Vec<Layer>,
}

/// Credentials and transport for registries.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Basic auth (user, password); else `~/.docker/config.json`, else anonymous.
    pub credentials: Option<(String, String)>,
    /// Plain HTTP.
    pub insecure: bool,
}

/// Somewhere an image can be read from.
pub trait ImageSource: Send + Sync {
    /// The config and layers of the image for `platform`.
    fn resolve(&mut self, platform: &PlatformSpec) -> Result<ResolvedImage, IndexError>;
    /// The blob of layer `index` (as resolved), read from its start.
    fn open_layer(&self, index: usize) -> Result<Box<dyn Read + Send + '_>, IndexError>;
}

/// Opens the source `image` names.
pub fn open(
    image: &ImageRef,
    registry: &RegistryOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<Box<dyn ImageSource>, IndexError> {
    Ok(match image {
        ImageRef::Registry { reference } => {
            Box::new(RegistrySource::new(reference, registry, runtime.clone())?)
        }
        ImageRef::Layout { dir, tag } => Box::new(LayoutSource {
            name: image.to_string(),
            dir: dir.clone(),
            tag: tag.clone(),
            layers: Vec::new(),
        }),
        ImageRef::Archive { file } => Box::new(ArchiveSource::new(image.to_string(), file)?),
    })
}

fn image_error(image: &str, reason: impl Into<String>) -> IndexError {
    IndexError::Image {
        image: image.to_string(),
        reason: reason.into(),
    }
}

/// The index entry for `platform`, or an error listing what the index offers.
fn select_platform<'a>(
    image: &str,
    index: &'a OciImageIndex,
    platform: &PlatformSpec,
) -> Result<&'a ImageIndexEntry, IndexError> {
    index
        .manifests
        .iter()
        .find(|m| {
            m.platform.as_ref().is_some_and(|p| {
                p.os == platform.os
                    && p.architecture == platform.architecture
                    && (platform.variant.is_none() || p.variant == platform.variant)
            })
        })
        .ok_or_else(|| {
            let offered: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            image_error(
                image,
                format!(
                    "no manifest for {platform} in the image index (it has: {})",
                    offered.join(", ")
                ),
            )
        })
}

/// Layers from the manifest's descriptors and the config's diff ids, checked to agree.
fn layers_of(
    image: &str,
    config: &serde_json::Value,
    descriptors: Option<&[OciDescriptor]>,
) -> Result<Vec<Layer>, IndexError> {
    let diff_ids: Vec<String> = config
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .ok_or_else(|| image_error(image, "config has no rootfs.diff_ids"))?
        .iter()
        .map(|v| {
            v.as_str()
                .filter(|d| sha256_hex(d).is_some())
                .map(str::to_string)
                .ok_or_else(|| image_error(image, format!("config: bad diff id {v}")))
        })
        .collect::<Result<_, _>>()?;
    if let Some(descriptors) = descriptors {
        if descriptors.len() != diff_ids.len() {
            return Err(image_error(
                image,
                format!(
                    "the manifest lists {} layers, the config {} diff ids",
                    descriptors.len(),
                    diff_ids.len()
                ),
            ));
        }
        for d in descriptors {
            if sha256_hex(&d.digest).is_none() {
                return Err(image_error(
                    image,
                    format!("layer digest {:?} is not sha256:HEX", d.digest),
                ));
            }
        }
    }
    Ok(diff_ids
        .into_iter()
        .enumerate()
        .map(|(i, diff_id)| {
            let digest = descriptors.map(|d| d[i].digest.clone());
            Layer {
                name: digest.clone().unwrap_or_else(|| diff_id.clone()),
                digest,
                diff_id,
            }
        })
        .collect())
}

fn parse_json<T: serde::de::DeserializeOwned>(
    image: &str,
    what: &str,
    bytes: &[u8],
) -> Result<T, IndexError> {
    serde_json::from_slice(bytes).map_err(|e| image_error(image, format!("{what}: {e}")))
}

/// A registry, through oci-client.
struct RegistrySource {
    name: String,
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
    runtime: tokio::runtime::Handle,
    descriptors: Vec<OciDescriptor>,
}

/// Basic credentials for `registry` from `~/.docker/config.json` (`auths.REGISTRY.auth`).
fn docker_config_credentials(registry: &str) -> Option<(String, String)> {
    use base64::Engine;
    let home = std::env::var_os("HOME")?;
    let config_dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&home).join(".docker"));
    let text = std::fs::read(config_dir.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let entry = auths.iter().find(|(k, _)| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        k.trim_end_matches('/') == registry || k.starts_with(&format!("{registry}/"))
    })?;
    let encoded = entry.1.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

impl RegistrySource {
    fn new(
        reference: &str,
        options: &RegistryOptions,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, IndexError> {
        let name = format!("docker://{reference}");
        let parsed: Reference = reference
            .parse()
            .map_err(|e| image_error(&name, format!("bad reference: {e}")))?;
        let credentials = options
            .credentials
            .clone()
            .or_else(|| docker_config_credentials(parsed.registry()));
        let auth = match credentials {
            Some((user, password)) => RegistryAuth::Basic(user, password),
            None => RegistryAuth::Anonymous,
        };
        let config = ClientConfig {
            protocol: if options.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            ..ClientConfig::default()
        };
        Ok(RegistrySource {
            name,
            client: Client::new(config),
            reference: parsed,
            auth,
            runtime,
            descriptors: Vec::new(),
        })
    }

    fn registry_error(
        &self,
        what: &str,
        e: oci_client::errors::OciDistributionError,
    ) -> IndexError {
        let hint = match &e {
            oci_client::errors::OciDistributionError::AuthenticationFailure(_)
            | oci_client::errors::OciDistributionError::UnauthorizedError { .. } => {
                " (check --username with --password-stdin or THAW_REGISTRY_PASSWORD, or ~/.docker/config.json)"
            }
            _ => "",
        };
        image_error(&self.name, format!("{what}: {e}{hint}"))
    }
}

impl RegistrySource {
    /// The config blob `descriptor` names, checked against its digest.
    fn config_blob(&self, descriptor: &OciDescriptor) -> Result<Vec<u8>, IndexError> {
        let mut bytes = Vec::new();
        self.runtime
            .block_on(
                self.client
                    .pull_blob(&self.reference, descriptor, &mut bytes),
            )
            .map_err(|e| self.registry_error("pulling the config", e))?;
        if sha256(&bytes) != descriptor.digest {
            return Err(image_error(
                &self.name,
                "config blob does not match its digest",
            ));
        }
        Ok(bytes)
    }
}

impl ImageSource for RegistrySource {
    fn resolve(&mut self, platform: &PlatformSpec) -> Result<ResolvedImage, IndexError> {
        let (manifest, _) = self
            .runtime
            .block_on(self.client.pull_manifest(&self.reference, &self.auth))
            .map_err(|e| self.registry_error("pulling the manifest", e))?;
        let manifest = match manifest {
            OciManifest::Image(m) => m,
            OciManifest::ImageIndex(index) => {
                let entry = select_platform(&self.name, &index, platform)?;
                let by_digest = self.reference.clone_with_digest(entry.digest.clone());
                match self
                    .runtime
                    .block_on(self.client.pull_manifest(&by_digest, &self.auth))
                    .map_err(|e| self.registry_error("pulling the platform manifest", e))?
                    .0
                {
                    OciManifest::Image(m) => m,
                    OciManifest::ImageIndex(_) => {
                        return Err(image_error(&self.name, "an index inside an index"))
                    }
                }
            }
        };
        let config_bytes = self.config_blob(&manifest.config)?;
        let config: serde_json::Value = parse_json(&self.name, "config", &config_bytes)?;
        let layers = layers_of(&self.name, &config, Some(&manifest.layers))?;
        self.descriptors = manifest.layers;
        Ok(ResolvedImage { config, layers })
    }

    fn open_layer(&self, index: usize) -> Result<Box<dyn Read + Send + '_>, IndexError> {
        let descriptor = &self.descriptors[index];
        let stream = self
            .runtime
            .block_on(self.client.pull_blob_stream(&self.reference, descriptor))
            .map_err(|e| self.registry_error(&format!("pulling layer {}", descriptor.digest), e))?;
        let reader = tokio_util::io::StreamReader::new(
            stream
                .stream
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
            Box::pin(reader),
            self.runtime.clone(),
        )))
    }
}

/// A blob as the registry serves it: its media type, digest and exact bytes.
#[derive(Clone, Debug)]
pub struct RawBlob {
    /// The media type (a manifest's own, or the config descriptor's).
    pub media_type: String,
    /// `sha256:HEX` of `bytes`.
    pub digest: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// An image's manifest and config as the registry serves them, and its layers: what a
/// container runtime needs to know of an image without any layer blob.
#[derive(Clone, Debug)]
pub struct ImageMetadata {
    /// The reference, normalised (`REGISTRY/REPO:TAG` or `@DIGEST`).
    pub name: String,
    /// The platform's image manifest.
    pub manifest: RawBlob,
    /// The image config.
    pub config: RawBlob,
    /// Its layers, bottom first.
    pub layers: Vec<Layer>,
}

/// Media types of manifests and indexes a pull accepts.
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

impl RegistrySource {
    /// One manifest as served, checked against its digest.
    fn raw_manifest(&self, reference: &Reference) -> Result<RawBlob, IndexError> {
        let (bytes, digest) = self
            .runtime
            .block_on(
                self.client
                    .pull_manifest_raw(reference, &self.auth, MANIFEST_TYPES),
            )
            .map_err(|e| self.registry_error("pulling the manifest", e))?;
        if sha256(&bytes) != digest {
            return Err(image_error(
                &self.name,
                format!("manifest does not match its digest {digest}"),
            ));
        }
        let value: serde_json::Value = parse_json(&self.name, "manifest", &bytes)?;
        let media_type = value
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or(MANIFEST_TYPES[0])
            .to_string();
        Ok(RawBlob {
            media_type,
            digest,
            bytes,
        })
    }
}

/// The manifest, config and layers of registry image `reference` for `platform`, fetched and
/// checked without reading a layer.
pub fn fetch_image_metadata(
    reference: &str,
    options: &RegistryOptions,
    platform: &PlatformSpec,
    runtime: &tokio::runtime::Handle,
) -> Result<ImageMetadata, IndexError> {
    let source = RegistrySource::new(reference, options, runtime.clone())?;
    let mut manifest = source.raw_manifest(&source.reference)?;
    if let Ok(index) = serde_json::from_slice::<OciImageIndex>(&manifest.bytes) {
        if !index.manifests.is_empty() {
            let entry = select_platform(&source.name, &index, platform)?;
            let by_digest = source.reference.clone_with_digest(entry.digest.clone());
            manifest = source.raw_manifest(&by_digest)?;
        }
    }
    let image: oci_client::manifest::OciImageManifest =
        parse_json(&source.name, "manifest", &manifest.bytes)?;
    let config = source.config_blob(&image.config)?;
    let value: serde_json::Value = parse_json(&source.name, "config", &config)?;
    let layers = layers_of(&source.name, &value, Some(&image.layers))?;
    Ok(ImageMetadata {
        name: source.reference.whole(),
        manifest,
        config: RawBlob {
            media_type: image.config.media_type.clone(),
            digest: image.config.digest.clone(),
            bytes: config,
        },
        layers,
    })
}

/// An OCI image layout folder.
struct LayoutSource {
    name: String,
    dir: PathBuf,
    tag: Option<String>,
    layers: Vec<PathBuf>,
}

impl LayoutSource {
    fn blob_path(&self, digest: &str) -> Result<PathBuf, IndexError> {
        let hex = sha256_hex(digest).ok_or_else(|| {
            image_error(&self.name, format!("digest {digest:?} is not sha256:HEX"))
        })?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    /// A small JSON blob, checked against its digest.
    fn read_blob(&self, digest: &str, what: &str) -> Result<Vec<u8>, IndexError> {
        let path = self.blob_path(digest)?;
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(MAX_JSON_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| IndexError::io(&path, e))?;
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(image_error(
                &self.name,
                format!("{what} {digest} is larger than {MAX_JSON_BYTES} bytes"),
            ));
        }
        if sha256(&bytes) != digest {
            return Err(image_error(
                &self.name,
                format!("{what} blob {} does not match its digest", path.display()),
            ));
        }
        Ok(bytes)
    }
}

impl ImageSource for LayoutSource {
    fn resolve(&mut self, platform: &PlatformSpec) -> Result<ResolvedImage, IndexError> {
        let index_path = self.dir.join("index.json");
        let index_bytes = std::fs::read(&index_path).map_err(|e| IndexError::io(&index_path, e))?;
        let index: OciImageIndex = parse_json(&self.name, "index.json", &index_bytes)?;
        let entry = match &self.tag {
            Some(tag) => index.manifests.iter().find(|m| {
                m.annotations
                    .as_ref()
                    .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                    == Some(tag)
            }),
            None if index.manifests.len() == 1 => index.manifests.first(),
            None => {
                return Err(image_error(
                    &self.name,
                    format!(
                        "the layout holds {} images: name one (oci:DIR:TAG)",
                        index.manifests.len()
                    ),
                ))
            }
        }
        .ok_or_else(|| image_error(&self.name, "no image with that tag in index.json"))?;
        let mut bytes = self.read_blob(&entry.digest, "manifest")?;
        let manifest = loop {
            match parse_json::<OciManifest>(&self.name, "manifest", &bytes)? {
                OciManifest::Image(m) => break m,
                OciManifest::ImageIndex(nested) => {
                    let chosen = select_platform(&self.name, &nested, platform)?;
                    bytes = self.read_blob(&chosen.digest.clone(), "manifest")?;
                }
            }
        };
        let config_bytes = self.read_blob(&manifest.config.digest, "config")?;
        let config: serde_json::Value = parse_json(&self.name, "config", &config_bytes)?;
        let layers = layers_of(&self.name, &config, Some(&manifest.layers))?;
        self.layers = manifest
            .layers
            .iter()
            .map(|d| self.blob_path(&d.digest))
            .collect::<Result<_, _>>()?;
        Ok(ResolvedImage { config, layers })
    }

    fn open_layer(&self, index: usize) -> Result<Box<dyn Read + Send + '_>, IndexError> {
        let path = &self.layers[index];
        Ok(Box::new(
            File::open(path).map_err(|e| IndexError::io(path, e))?,
        ))
    }
}

/// A `docker save` tarball: `manifest.json` names the config and layer files inside it.
struct ArchiveSource {
    name: String,
    file: PathBuf,
    /// Entry path -> (offset of its data, size).
    entries: HashMap<String, (u64, u64)>,
    layers: Vec<String>,
}

impl ArchiveSource {
    fn new(name: String, file: &Path) -> Result<Self, IndexError> {
        let handle = File::open(file).map_err(|e| IndexError::io(file, e))?;
        let mut archive = tar::Archive::new(handle);
        let mut entries = HashMap::new();
        for entry in archive.entries().map_err(|e| IndexError::io(file, e))? {
            let entry =
                entry.map_err(|e| image_error(&name, format!("reading the archive: {e}")))?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = path.trim_start_matches("./").to_string();
            entries.insert(path, (entry.raw_file_position(), entry.size()));
        }
        Ok(ArchiveSource {
            name,
            file: file.to_path_buf(),
            entries,
            layers: Vec::new(),
        })
    }

    fn open_entry(&self, path: &str) -> Result<std::io::Take<File>, IndexError> {
        let (offset, size) = *self
            .entries
            .get(path.trim_start_matches("./"))
            .ok_or_else(|| image_error(&self.name, format!("the archive has no {path}")))?;
        let mut file = File::open(&self.file).map_err(|e| IndexError::io(&self.file, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| IndexError::io(&self.file, e))?;
        Ok(file.take(size))
    }

    fn read_entry(&self, path: &str) -> Result<Vec<u8>, IndexError> {
        let mut bytes = Vec::new();
        self.open_entry(path)?
            .take(MAX_JSON_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| IndexError::io(&self.file, e))?;
        Ok(bytes)
    }
}

#[derive(serde::Deserialize)]
struct ArchiveManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

impl ImageSource for ArchiveSource {
    fn resolve(&mut self, _platform: &PlatformSpec) -> Result<ResolvedImage, IndexError> {
        let manifests: Vec<ArchiveManifest> = parse_json(
            &self.name,
            "manifest.json",
            &self.read_entry("manifest.json")?,
        )?;
        let manifest = match manifests.as_slice() {
            [one] => one,
            _ => {
                return Err(image_error(
                    &self.name,
                    format!(
                        "manifest.json lists {} images; thaw takes archives of one",
                        manifests.len()
                    ),
                ))
            }
        };
        let config_bytes = self.read_entry(&manifest.config)?;
        // `docker save` names the config after its digest; check it when it does.
        let stem = manifest.config.rsplit('/').next().unwrap_or_default();
        let stem = stem.trim_end_matches(".json");
        if sha256_hex(&format!("sha256:{stem}")).is_some()
            && sha256(&config_bytes) != format!("sha256:{stem}")
        {
            return Err(image_error(
                &self.name,
                format!("config {} does not match its digest", manifest.config),
            ));
        }
        let config: serde_json::Value = parse_json(&self.name, "config", &config_bytes)?;
        let layers = layers_of(&self.name, &config, None)?;
        if layers.len() != manifest.layers.len() {
            return Err(image_error(
                &self.name,
                format!(
                    "manifest.json lists {} layers, the config {} diff ids",
                    manifest.layers.len(),
                    layers.len()
                ),
            ));
        }
        self.layers = manifest.layers.clone();
        Ok(ResolvedImage { config, layers })
    }

    fn open_layer(&self, index: usize) -> Result<Box<dyn Read + Send + '_>, IndexError> {
        Ok(Box::new(self.open_entry(&self.layers[index])?))
    }
}

#[cfg(test)]
mod fuzz_tests {
    use super::*;

    /// An image index, a manifest and a config as registries serve them.
    fn seeds() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                 "size": 500, "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                 "size": 500, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
            ]
        });
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 300},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": 1000},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": digest, "size": 2000}
            ]
        });
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["python3"]},
            "rootfs": {"type": "layers", "diff_ids": [digest, digest]}
        });
        let bytes = |v: &serde_json::Value| serde_json::to_vec(v).unwrap();
        (bytes(&index), bytes(&manifest), bytes(&config))
    }

    /// Index, manifest and config JSON come from registries and layouts: parsing, choosing a
    /// platform and pairing layers with diff ids must never panic on a mutated one.
    #[test]
    fn fuzz_oci_index_manifest_and_config() {
        let (index, manifest, config) = seeds();
        let cases = thaw_core::fuzz::cases(3000);
        let platform: PlatformSpec = "linux/amd64".parse().unwrap();
        thaw_core::fuzz::run("oci index", &[index], cases, |input| {
            if let Ok(index) = parse_json::<OciImageIndex>("i", "index", input) {
                let _ = select_platform("i", &index, &platform);
            }
        });
        let (_, _, config_seed) = seeds();
        thaw_core::fuzz::run("oci manifest", &[manifest], cases, |input| {
            let config: serde_json::Value = serde_json::from_slice(&config_seed).unwrap();
            if let Ok(OciManifest::Image(m)) = parse_json::<OciManifest>("i", "manifest", input) {
                let _ = layers_of("i", &config, Some(&m.layers));
            }
        });
        let descriptors: Vec<OciDescriptor> = match parse_json::<OciManifest>("i", "m", &seeds().1)
        {
            Ok(OciManifest::Image(m)) => m.layers,
            _ => panic!("the seed manifest parses"),
        };
        thaw_core::fuzz::run("oci config", &[config], cases, |input| {
            if let Ok(config) = parse_json::<serde_json::Value>("i", "config", input) {
                let _ = layers_of("i", &config, Some(&descriptors));
                let _ = layers_of("i", &config, None);
            }
        });
    }
}
