//! Finding an executable by name.

use std::path::PathBuf;

/// `name` in `$PATH`, else in /usr/local/sbin or /usr/sbin (sbin is often off a user's PATH, and
/// runc, criu and mount helpers live there). A `name` with a slash is returned when it exists.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/local/sbin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_shell_and_not_a_missing_tool() {
        let sh = which("sh").expect("sh is on every PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(which(&sh.display().to_string()), Some(sh));
        assert_eq!(which("thaw-no-such-tool"), None);
        assert_eq!(which("/nonexistent/thaw-no-such-tool"), None);
    }
}
