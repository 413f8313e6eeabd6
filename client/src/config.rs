//! The configuration and the order its sources apply in: built-in defaults, then the TOML file,
//! then the environment ([`crate::vars`]); the caller applies command-line flags last.
//!
//! The file is the one named (`--config FILE` or `$THAW_CONFIG`; it must exist), else
//! `$XDG_CONFIG_HOME/thaw/config.toml` or `~/.config/thaw/config.toml` when present. An empty
//! `$THAW_CONFIG` means no file (how a parent hands a child a fully resolved configuration).
//! Unknown keys are errors naming the file.
//!
//! ```toml
//! [store]
//! url = "s3://models/thaw"
//! s3_endpoint = "http://minio.internal:9000"
//! [cache]
//! dir = "/var/cache/thaw"
//! bytes = "200GiB"
//! memory_bytes = "2GiB"
//! [runtime]
//! dir = "/run/thaw"
//! [peers]
//! list = "dns://thaw-cache.thaw.svc.cluster.local:7070"
//! token_file = "/etc/thaw/peer-token"
//! ca_file = "/etc/thaw/peer-ca.pem"       # peers serve https (cert_file, key_file: mutual TLS)
//! timeout_ms = 5000
//! refresh_secs = 10
//! ```
//!
//! `[store]` also takes `timeout_ms` and `retries` (cloud store requests), and `[peers]` takes
//! `cert_file`, `key_file` and `tls_name`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::{vars, ConfigError};

/// Default disk cache budget.
const DEFAULT_CACHE_BYTES: u64 = 20 << 30;
/// Default memory cache budget.
const DEFAULT_MEMORY_CACHE_BYTES: u64 = 512 << 20;
/// Default time a peer has to deliver a chunk.
const DEFAULT_PEER_TIMEOUT_MS: u64 = 5000;
/// Default interval between re-reads of a peer file or DNS name.
const DEFAULT_PEER_REFRESH_SECS: u64 = 10;

/// Everything a thaw process needs to reach its data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[store]`: where the store is.
    pub store: StoreSettings,
    /// `[cache]`: the local caches.
    pub cache: CacheSettings,
    /// `[runtime]`: where sockets and daemon logs go.
    pub runtime: RuntimeSettings,
    /// `[peers]`: the peer caches read before the store.
    pub peers: PeerSettings,
}

/// `[store]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// A directory, `file://DIR`, `s3://BUCKET[/PREFIX]`, `gs://...`, `az://...`; `None` is the
    /// embedded default folder.
    pub url: Option<String>,
    /// Endpoint of an S3-compatible server.
    pub s3_endpoint: Option<String>,
    /// S3 region (else `AWS_REGION`).
    pub s3_region: Option<String>,
    /// S3 access key id (else `AWS_ACCESS_KEY_ID`).
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (else `AWS_SECRET_ACCESS_KEY`); never serialised.
    #[serde(skip_serializing)]
    pub s3_secret_access_key: Option<String>,
    /// Allow plain HTTP to the S3 endpoint.
    pub s3_allow_http: bool,
    /// Milliseconds waited before every store read, to measure against a distant store
    /// (benchmarks; environment only).
    #[serde(skip_deserializing)]
    pub read_latency_ms: Option<u64>,
    /// Milliseconds one request to a cloud store may take, its body included; `None`: 30000.
    pub timeout_ms: Option<u64>,
    /// Retries of a failed or timed-out request to a cloud store; `None`: 10.
    pub retries: Option<usize>,
}

/// `[cache]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// The disk cache directory; `None` is the default (`~/.cache/thaw/chunks`).
    pub dir: Option<PathBuf>,
    /// Disk cache budget in bytes (`20GiB` or a number in the file).
    #[serde(deserialize_with = "size")]
    pub bytes: u64,
    /// Memory cache budget in bytes.
    #[serde(deserialize_with = "size")]
    pub memory_bytes: u64,
    /// Whether the disk cache is used at all.
    pub disk: bool,
}

/// `[runtime]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Control sockets, daemon logs and container directories; `None` is the default.
    pub dir: Option<PathBuf>,
}

/// `[peers]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerSettings {
    /// `http://a:7070,b:7070`, `@FILE` or `dns://NAME:PORT`; `None`: no peers.
    pub list: Option<String>,
    /// File holding the bearer token (else `$THAW_PEER_TOKEN`).
    pub token_file: Option<PathBuf>,
    /// Milliseconds a peer has to deliver a chunk.
    pub timeout_ms: u64,
    /// Seconds between re-reads of a peer file or DNS name.
    pub refresh_secs: u64,
    /// PEM CA that `https://` peers' certificates must chain to (the only roots trusted).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate this client presents to peers that ask for one (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name every peer's certificate must be valid for, instead of the address dialled
    /// (peers found by DNS are dialled by IP).
    pub tls_name: Option<String>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            dir: None,
            bytes: DEFAULT_CACHE_BYTES,
            memory_bytes: DEFAULT_MEMORY_CACHE_BYTES,
            disk: true,
        }
    }
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings {
            list: None,
            token_file: None,
            timeout_ms: DEFAULT_PEER_TIMEOUT_MS,
            refresh_secs: DEFAULT_PEER_REFRESH_SECS,
            ca_file: None,
            cert_file: None,
            key_file: None,
            tls_name: None,
        }
    }
}

/// A size written as a number of bytes or a string such as "20GiB".
fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(text) => parse_size(&text).map_err(serde::de::Error::custom),
    }
}

/// Parses "20GiB", "512MiB", "1000" into bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("not a size ({e}); write e.g. 20GiB or a number of bytes"))
}

impl Config {
    /// Defaults, then the config file (`file`, else `$THAW_CONFIG`, else the XDG default when
    /// present), then the `THAW_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match Self::file_to_read(file)? {
            Some(path) => Self::from_file(&path)?,
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// The config file `load` reads, if any.
    fn file_to_read(file: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
        let named = match file {
            Some(path) => Some(path.to_path_buf()),
            None => std::env::var_os(vars::CONFIG_ENV).map(PathBuf::from),
        };
        match named {
            Some(path) if path.as_os_str().is_empty() => Ok(None),
            Some(path) if !path.is_file() => Err(ConfigError::MissingFile(path)),
            Some(path) => Ok(Some(path)),
            None => Ok(Some(thaw_core::dirs::default_config_file()).filter(|p| p.is_file())),
        }
    }

    /// Reads a TOML config file (missing sections and keys keep their defaults).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|reason| ConfigError::BadFile {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().to_string())
    }

    /// Applies the `THAW_*` variables `lookup` knows (empty values are unset).
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        vars::apply(self, lookup)
    }

    /// The disk cache directory in use (the default when none is set), or `None` when the disk
    /// cache is off.
    pub fn disk_cache_dir(&self) -> Option<PathBuf> {
        self.cache.disk.then(|| {
            self.cache
                .dir
                .clone()
                .unwrap_or_else(thaw_core::dirs::default_cache)
        })
    }

    /// The runtime dir in use (the default when none is set).
    pub fn runtime_dir(&self) -> PathBuf {
        self.runtime
            .dir
            .clone()
            .unwrap_or_else(thaw_core::dirs::default_runtime_dir)
    }

    /// Hands this configuration to a child process: every variable set from it (or removed
    /// when unset here) and no config file read again, so the child sees exactly this.
    pub fn pass_to(&self, command: &mut std::process::Command) {
        for (name, value) in vars::to_env(self) {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        command.env(vars::CONFIG_ENV, "");
    }

    /// The variables [`Config::pass_to`] sets (`None`: removed), for callers that build an
    /// environment another way.
    pub fn to_env(&self) -> Vec<(&'static str, Option<String>)> {
        vars::to_env(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config file is written by people and tools: a mutated one is an error or a
    /// configuration, never a panic, and what it sets turns into store and peer settings.
    #[test]
    fn fuzz_config_file() {
        let seed = "[store]\nurl = \"s3://b/p\"\ns3_endpoint = \"http://m:9000\"\ntimeout_ms = 2000\nretries = 3\n\
            [cache]\nbytes = \"20GiB\"\nmemory_bytes = 1000\ndisk = true\ndir = \"/c\"\n[runtime]\ndir = \"/r\"\n\
            [peers]\nlist = \"dns+https://cache:7070\"\ntoken_file = \"/t\"\nca_file = \"/ca\"\ntls_name = \"cache\"\n\
            timeout_ms = 900\nrefresh_secs = 10\n";
        let cases = thaw_core::fuzz::cases(3000);
        thaw_core::fuzz::run("config file", &[seed.as_bytes().to_vec()], cases, |input| {
            let Ok(text) = std::str::from_utf8(input) else {
                return;
            };
            if let Ok(config) = Config::from_toml(text) {
                let _ = crate::connect::store_config(&config);
                let _ = crate::connect::peer_tls(&config);
                let _ = config.disk_cache_dir();
                let _ = config.to_env();
            }
        });
    }

    #[test]
    fn the_file_sets_every_section_and_sizes_take_units() {
        let config = Config::from_toml(
            "[store]\nurl = \"s3://b/p\"\ns3_allow_http = true\n[cache]\nbytes = 1000\nmemory_bytes = \"2GiB\"\ndisk = false\ndir = \"/c\"\n[runtime]\ndir = \"/r\"\n[peers]\nlist = \"dns://cache:7070\"\ntoken_file = \"/t\"\ntimeout_ms = 900\n",
        )
        .unwrap();
        assert_eq!(config.store.url.as_deref(), Some("s3://b/p"));
        assert!(config.store.s3_allow_http);
        assert_eq!(config.cache.bytes, 1000);
        assert_eq!(config.cache.memory_bytes, 2 << 30);
        assert!(!config.cache.disk);
        assert_eq!(config.disk_cache_dir(), None);
        assert_eq!(config.runtime_dir(), Path::new("/r"));
        assert_eq!(config.peers.list.as_deref(), Some("dns://cache:7070"));
        assert_eq!(config.peers.timeout_ms, 900);
        assert_eq!(config.peers.refresh_secs, DEFAULT_PEER_REFRESH_SECS);
        assert_eq!(config.store.s3_endpoint, None);
    }

    #[test]
    fn unknown_keys_and_bad_sizes_are_refused_naming_them() {
        let err = Config::from_toml("[store]\nurll = \"x\"\n").unwrap_err();
        assert!(err.contains("urll"), "{err}");
        let err = Config::from_toml("[cache]\nbytes = \"lots\"\n").unwrap_err();
        assert!(err.contains("not a size") && err.contains("bytes"), "{err}");
    }

    #[test]
    fn a_named_file_must_exist_and_an_empty_name_reads_none() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let err = Config::file_to_read(Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.toml") && err.contains("does not exist"),
            "{err}"
        );
        assert_eq!(Config::file_to_read(Some(Path::new(""))).unwrap(), None);
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[cache]\nbytes = \"1KiB\"\n").unwrap();
        assert_eq!(Config::from_file(&file).unwrap().cache.bytes, 1024);
        std::fs::write(&file, "[cache\n").unwrap();
        let err = Config::from_file(&file).unwrap_err().to_string();
        assert!(err.contains("c.toml"), "{err}");
    }
}
