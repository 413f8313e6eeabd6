//! Copying a directory tree whole.

use std::path::Path;

/// Copies the tree `from` to `to` (replaced if it exists) with its metadata, xattrs, hard
/// links and device nodes (`cp -a`: an overlay's whiteouts are character devices and its
/// opaque directories an xattr, so an upper layer copies intact).
pub async fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(to);
    let out = tokio::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .await?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "cp -a {} {}: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_tree_copies_with_its_links_and_replaces_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::write(from.join("sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink("sub/f", from.join("l")).unwrap();
        std::fs::create_dir_all(to.join("stale")).unwrap();
        super::copy_tree(&from, &to).await.unwrap();
        assert_eq!(std::fs::read(to.join("l")).unwrap(), b"x");
        assert!(std::fs::symlink_metadata(to.join("l"))
            .unwrap()
            .is_symlink());
        assert!(!to.join("stale").exists());
        let err = super::copy_tree(&dir.path().join("none"), &to)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
    }
}
