//! The optional TOML config file: defaults for the global options, below command-line flags and
//! environment variables.
//!
//! Every global option already has an environment fallback, so the file is applied by setting the
//! variables it names that are not set yet, before the command line is parsed: a flag beats the
//! environment, which beats the file, which beats the built-in default. The file is `--config
//! FILE` or `$THAW_CONFIG` when given (then it must exist), else `$XDG_CONFIG_HOME/thaw/config.toml`
//! or `~/.config/thaw/config.toml` when present. Unknown keys are errors naming the file.
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
//! timeout_ms = 5000
//! refresh_secs = 10
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    cache: CacheSection,
    #[serde(default)]
    runtime: RuntimeSection,
    #[serde(default)]
    peers: PeersSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    url: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_access_key_id: Option<String>,
    s3_secret_access_key: Option<String>,
    s3_allow_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheSection {
    dir: Option<PathBuf>,
    bytes: Option<Size>,
    memory_bytes: Option<Size>,
    /// `false` turns the disk cache off.
    disk: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeSection {
    dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersSection {
    /// The `--peers` value.
    list: Option<String>,
    token_file: Option<PathBuf>,
    timeout_ms: Option<u64>,
    refresh_secs: Option<u64>,
}

/// A size written as a number of bytes or a string such as "20GiB".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn into_string(self) -> String {
        match self {
            Size::Bytes(n) => n.to_string(),
            Size::Text(s) => s,
        }
    }
}

impl ConfigFile {
    /// The environment variables this file sets, with their values.
    fn variables(self) -> Vec<(&'static str, OsString)> {
        let mut out: Vec<(&'static str, OsString)> = Vec::new();
        let mut text = |name, value: Option<String>| {
            if let Some(value) = value {
                out.push((name, value.into()));
            }
        };
        text("THAW_STORE", self.store.url);
        text("THAW_S3_ENDPOINT", self.store.s3_endpoint);
        text("THAW_S3_REGION", self.store.s3_region);
        text("THAW_S3_ACCESS_KEY_ID", self.store.s3_access_key_id);
        text("THAW_S3_SECRET_ACCESS_KEY", self.store.s3_secret_access_key);
        text(
            "THAW_S3_ALLOW_HTTP",
            self.store.s3_allow_http.map(|b| b.to_string()),
        );
        text("THAW_CACHE_BYTES", self.cache.bytes.map(Size::into_string));
        text(
            "THAW_MEMORY_CACHE_BYTES",
            self.cache.memory_bytes.map(Size::into_string),
        );
        text(
            "THAW_NO_DISK_CACHE",
            self.cache.disk.map(|on| (!on).to_string()),
        );
        if let Some(dir) = self.cache.dir {
            out.push(("THAW_CACHE_DIR", dir.into()));
        }
        if let Some(dir) = self.runtime.dir {
            out.push(("THAW_RUNTIME_DIR", dir.into()));
        }
        if let Some(list) = self.peers.list {
            out.push(("THAW_PEERS", list.into()));
        }
        if let Some(file) = self.peers.token_file {
            out.push(("THAW_PEER_TOKEN_FILE", file.into()));
        }
        if let Some(ms) = self.peers.timeout_ms {
            out.push(("THAW_PEER_TIMEOUT_MS", ms.to_string().into()));
        }
        if let Some(secs) = self.peers.refresh_secs {
            out.push(("THAW_PEER_REFRESH_SECS", secs.to_string().into()));
        }
        out
    }
}

/// The config file named on the command line (`--config FILE`, `--config=FILE`), if any.
fn named_on_command_line(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            return None;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    None
}

fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("thaw/config.toml"))
}

fn read(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

/// Applies the config file (if any) as environment defaults. Call before parsing the command
/// line and before any thread starts.
pub fn apply_defaults() -> anyhow::Result<()> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let explicit =
        named_on_command_line(&args).or_else(|| std::env::var_os("THAW_CONFIG").map(PathBuf::from));
    let path = match explicit {
        Some(path) if !path.is_file() => bail!("config file {} does not exist", path.display()),
        Some(path) => path,
        None => match default_path().filter(|p| p.is_file()) {
            Some(path) => path,
            None => return Ok(()),
        },
    };
    for (name, value) in read(&path)?.variables() {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_maps_to_the_environment_variables_of_the_options() {
        let config: ConfigFile = toml::from_str(
            "[store]\nurl = \"s3://b/p\"\ns3_allow_http = true\n[cache]\nbytes = 1000\nmemory_bytes = \"2GiB\"\ndisk = false\ndir = \"/c\"\n[peers]\nlist = \"dns://cache:7070\"\ntoken_file = \"/t\"\ntimeout_ms = 900\n",
        )
        .unwrap();
        let vars: std::collections::BTreeMap<_, _> = config.variables().into_iter().collect();
        assert_eq!(vars["THAW_STORE"], "s3://b/p");
        assert_eq!(vars["THAW_S3_ALLOW_HTTP"], "true");
        assert_eq!(vars["THAW_CACHE_BYTES"], "1000");
        assert_eq!(vars["THAW_MEMORY_CACHE_BYTES"], "2GiB");
        assert_eq!(vars["THAW_NO_DISK_CACHE"], "true");
        assert_eq!(vars["THAW_CACHE_DIR"], "/c");
        assert_eq!(vars["THAW_PEERS"], "dns://cache:7070");
        assert_eq!(vars["THAW_PEER_TOKEN_FILE"], "/t");
        assert_eq!(vars["THAW_PEER_TIMEOUT_MS"], "900");
        assert!(!vars.contains_key("THAW_S3_ENDPOINT"));
        assert!(!vars.contains_key("THAW_PEER_REFRESH_SECS"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<ConfigFile>("[store]\nurll = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("urll"), "{err}");
    }

    #[test]
    fn the_config_flag_is_found_in_either_form_and_not_after_a_double_dash() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            named_on_command_line(&args(&["-q", "--config", "/a.toml", "tags"])),
            Some(PathBuf::from("/a.toml"))
        );
        assert_eq!(
            named_on_command_line(&args(&["--config=/b.toml"])),
            Some(PathBuf::from("/b.toml"))
        );
        assert_eq!(
            named_on_command_line(&args(&["run", "--", "--config", "x"])),
            None
        );
    }
}
