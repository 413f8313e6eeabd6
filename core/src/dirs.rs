//! thaw's default directories, from one XDG base-directory lookup: the embedded store (data), the
//! disk cache (cache), the config file (config) and the runtime dir (sockets, daemon logs).

use std::path::PathBuf;

/// An XDG base directory: `$VAR` when set and absolute, else `~/<home_fallback>`, else `.`.
fn xdg_base(var: &str, home_fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(home_fallback)))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The embedded default store: `$XDG_DATA_HOME/thaw/store` or `~/.local/share/thaw/store`.
pub fn default_store() -> PathBuf {
    xdg_base("XDG_DATA_HOME", ".local/share").join("thaw/store")
}

/// The disk cache: `$XDG_CACHE_HOME/thaw/chunks` or `~/.cache/thaw/chunks`.
pub fn default_cache() -> PathBuf {
    xdg_base("XDG_CACHE_HOME", ".cache").join("thaw/chunks")
}

/// The config file looked for when none is named: `$XDG_CONFIG_HOME/thaw/config.toml` or
/// `~/.config/thaw/config.toml`.
pub fn default_config_file() -> PathBuf {
    xdg_base("XDG_CONFIG_HOME", ".config").join("thaw/config.toml")
}

/// Control sockets, daemon logs and container directories: `/run/thaw` for root, else
/// `$XDG_RUNTIME_DIR/thaw`, else `/tmp/thaw-<uid>`.
pub fn default_runtime_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from("/run/thaw");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("thaw"),
        _ => PathBuf::from(format!("/tmp/thaw-{uid}")),
    }
}
