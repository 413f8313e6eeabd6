//! The `THAW_*` environment variables: one table, read by [`apply`] and written for a child by
//! [`to_env`], so the two can never drift apart.

use std::path::PathBuf;

use crate::config::{parse_size, Config};
use crate::ConfigError;

/// Names the config file; empty means none.
pub const CONFIG_ENV: &str = "THAW_CONFIG";
/// Holds the peer token itself (when no token file is given). Never written by [`to_env`]: a
/// child inherits it from its parent's environment like any secret.
pub const PEER_TOKEN_ENV: &str = "THAW_PEER_TOKEN";

/// One variable: its name, how it sets the configuration, and how the configuration writes it.
struct Variable {
    name: &'static str,
    set: fn(&mut Config, &str) -> Result<(), String>,
    get: fn(&Config) -> Option<String>,
}

fn text(value: &str) -> Option<String> {
    Some(value.to_string())
}

fn path(value: &str) -> Option<PathBuf> {
    Some(PathBuf::from(value))
}

fn shown(path: &Option<PathBuf>) -> Option<String> {
    path.as_ref().map(|p| p.display().to_string())
}

/// `1`, `true`, `t`, `yes`, `y`, `on` and `0`, `false`, `f`, `no`, `n`, `off` (any case).
fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Ok(true),
        "0" | "false" | "f" | "no" | "n" | "off" => Ok(false),
        _ => Err("expected true or false (1/0, yes/no, on/off)".into()),
    }
}

fn number(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| "expected a whole number".to_string())
}

/// Every variable of the configuration.
static VARIABLES: &[Variable] = &[
    Variable {
        name: "THAW_STORE",
        set: |c, v| {
            c.store.url = text(v);
            Ok(())
        },
        get: |c| c.store.url.clone(),
    },
    Variable {
        name: "THAW_S3_ENDPOINT",
        set: |c, v| {
            c.store.s3_endpoint = text(v);
            Ok(())
        },
        get: |c| c.store.s3_endpoint.clone(),
    },
    Variable {
        name: "THAW_S3_REGION",
        set: |c, v| {
            c.store.s3_region = text(v);
            Ok(())
        },
        get: |c| c.store.s3_region.clone(),
    },
    Variable {
        name: "THAW_S3_ACCESS_KEY_ID",
        set: |c, v| {
            c.store.s3_access_key_id = text(v);
            Ok(())
        },
        get: |c| c.store.s3_access_key_id.clone(),
    },
    Variable {
        name: "THAW_S3_SECRET_ACCESS_KEY",
        set: |c, v| {
            c.store.s3_secret_access_key = text(v);
            Ok(())
        },
        get: |c| c.store.s3_secret_access_key.clone(),
    },
    Variable {
        name: "THAW_S3_ALLOW_HTTP",
        set: |c, v| {
            c.store.s3_allow_http = boolean(v)?;
            Ok(())
        },
        get: |c| Some(c.store.s3_allow_http.to_string()),
    },
    Variable {
        name: "THAW_STORE_READ_LATENCY_MS",
        set: |c, v| {
            c.store.read_latency_ms = Some(number(v)?);
            Ok(())
        },
        get: |c| c.store.read_latency_ms.map(|ms| ms.to_string()),
    },
    Variable {
        name: "THAW_STORE_TIMEOUT_MS",
        set: |c, v| {
            c.store.timeout_ms = Some(number(v)?);
            Ok(())
        },
        get: |c| c.store.timeout_ms.map(|ms| ms.to_string()),
    },
    Variable {
        name: "THAW_STORE_RETRIES",
        set: |c, v| {
            c.store.retries = Some(number(v)? as usize);
            Ok(())
        },
        get: |c| c.store.retries.map(|n| n.to_string()),
    },
    Variable {
        name: "THAW_CACHE_DIR",
        set: |c, v| {
            c.cache.dir = path(v);
            Ok(())
        },
        get: |c| shown(&c.cache.dir),
    },
    Variable {
        name: "THAW_CACHE_BYTES",
        set: |c, v| {
            c.cache.bytes = parse_size(v)?;
            Ok(())
        },
        get: |c| Some(c.cache.bytes.to_string()),
    },
    Variable {
        name: "THAW_MEMORY_CACHE_BYTES",
        set: |c, v| {
            c.cache.memory_bytes = parse_size(v)?;
            Ok(())
        },
        get: |c| Some(c.cache.memory_bytes.to_string()),
    },
    Variable {
        name: "THAW_NO_DISK_CACHE",
        set: |c, v| {
            c.cache.disk = !boolean(v)?;
            Ok(())
        },
        get: |c| Some((!c.cache.disk).to_string()),
    },
    Variable {
        name: "THAW_RUNTIME_DIR",
        set: |c, v| {
            c.runtime.dir = path(v);
            Ok(())
        },
        get: |c| shown(&c.runtime.dir),
    },
    Variable {
        name: "THAW_PEERS",
        set: |c, v| {
            c.peers.list = text(v);
            Ok(())
        },
        get: |c| c.peers.list.clone(),
    },
    Variable {
        name: "THAW_PEER_TOKEN_FILE",
        set: |c, v| {
            c.peers.token_file = path(v);
            Ok(())
        },
        get: |c| shown(&c.peers.token_file),
    },
    Variable {
        name: "THAW_PEER_CA_FILE",
        set: |c, v| {
            c.peers.ca_file = path(v);
            Ok(())
        },
        get: |c| shown(&c.peers.ca_file),
    },
    Variable {
        name: "THAW_PEER_CERT_FILE",
        set: |c, v| {
            c.peers.cert_file = path(v);
            Ok(())
        },
        get: |c| shown(&c.peers.cert_file),
    },
    Variable {
        name: "THAW_PEER_KEY_FILE",
        set: |c, v| {
            c.peers.key_file = path(v);
            Ok(())
        },
        get: |c| shown(&c.peers.key_file),
    },
    Variable {
        name: "THAW_PEER_TLS_NAME",
        set: |c, v| {
            c.peers.tls_name = text(v);
            Ok(())
        },
        get: |c| c.peers.tls_name.clone(),
    },
    Variable {
        name: "THAW_PEER_TIMEOUT_MS",
        set: |c, v| {
            c.peers.timeout_ms = number(v)?;
            Ok(())
        },
        get: |c| Some(c.peers.timeout_ms.to_string()),
    },
    Variable {
        name: "THAW_PEER_REFRESH_SECS",
        set: |c, v| {
            c.peers.refresh_secs = number(v)?;
            Ok(())
        },
        get: |c| Some(c.peers.refresh_secs.to_string()),
    },
];

/// The names of every configuration variable, for help texts and docs.
pub fn variable_names() -> impl Iterator<Item = &'static str> {
    VARIABLES.iter().map(|v| v.name)
}

/// Applies each variable `lookup` returns a non-empty value for.
pub(crate) fn apply(
    config: &mut Config,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for variable in VARIABLES {
        let Some(value) = lookup(variable.name).filter(|v| !v.is_empty()) else {
            continue;
        };
        (variable.set)(config, &value).map_err(|reason| ConfigError::BadVariable {
            name: variable.name,
            value: value.clone(),
            reason,
        })?;
    }
    Ok(())
}

/// Every variable as `config` sets it (`None`: unset).
pub(crate) fn to_env(config: &Config) -> Vec<(&'static str, Option<String>)> {
    VARIABLES
        .iter()
        .map(|variable| (variable.name, (variable.get)(config)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut config = Config::default();
        config.apply_env(|name| map.get(name).cloned())?;
        Ok(config)
    }

    #[test]
    fn booleans_read_false_as_false() {
        for (value, expected) in [
            ("false", false),
            ("0", false),
            ("no", false),
            ("true", true),
            ("1", true),
            ("ON", true),
        ] {
            let config =
                from(&[("THAW_S3_ALLOW_HTTP", value), ("THAW_NO_DISK_CACHE", value)]).unwrap();
            assert_eq!(config.store.s3_allow_http, expected, "{value}");
            assert_eq!(config.cache.disk, !expected, "{value}");
        }
        let err = from(&[("THAW_NO_DISK_CACHE", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("THAW_NO_DISK_CACHE=\"maybe\""), "{err}");
    }

    #[test]
    fn sizes_numbers_and_empty_values() {
        let config = from(&[
            ("THAW_CACHE_BYTES", "1GiB"),
            ("THAW_MEMORY_CACHE_BYTES", "4096"),
            ("THAW_PEER_REFRESH_SECS", "3"),
            ("THAW_STORE", ""),
        ])
        .unwrap();
        assert_eq!(config.cache.bytes, 1 << 30);
        assert_eq!(config.cache.memory_bytes, 4096);
        assert_eq!(config.peers.refresh_secs, 3);
        assert_eq!(config.store.url, None);
        let err = from(&[("THAW_PEER_TIMEOUT_MS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("THAW_PEER_TIMEOUT_MS") && err.contains("whole number"),
            "{err}"
        );
    }

    #[test]
    fn a_child_gets_back_exactly_the_configuration_it_was_handed() {
        let mut config = Config::default();
        config.store.url = Some("s3://bucket/prefix".into());
        config.store.s3_endpoint = Some("http://127.0.0.1:9000".into());
        config.store.s3_region = Some("eu-west-1".into());
        config.store.s3_access_key_id = Some("id".into());
        config.store.s3_secret_access_key = Some("secret".into());
        config.store.s3_allow_http = true;
        config.store.read_latency_ms = Some(20);
        config.cache.dir = Some("/var/cache/thaw".into());
        config.cache.bytes = 123;
        config.cache.memory_bytes = 456;
        config.cache.disk = false;
        config.runtime.dir = Some("/run/x".into());
        config.peers.list = Some("dns://cache:7070".into());
        config.peers.token_file = Some("/etc/token".into());
        config.peers.timeout_ms = 77;
        config.peers.refresh_secs = 3;
        let env: BTreeMap<&str, Option<String>> = to_env(&config).into_iter().collect();
        let mut child = Config::default();
        child
            .apply_env(|name| env.get(name).cloned().flatten())
            .unwrap();
        assert_eq!(child, config);
        // Unset values are removed from the child's environment, not left to what it inherits.
        let env = to_env(&Config::default());
        assert!(env.contains(&("THAW_PEERS", None)), "{env:?}");
        assert_eq!(env.len(), VARIABLES.len());
    }
}
