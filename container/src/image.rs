//! What an indexed image says about running it: the image config's runtime fields, read from
//! the manifest's [`IMAGE_CONFIG_ANNOTATION`], with docker's rules for arguments, environment and
//! users.

use std::path::Path;

use thaw_core::manifest::{Manifest, IMAGE_CONFIG_ANNOTATION};

use crate::ContainerError;

/// What the image config says about running it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageRuntime {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`KEY=VALUE`).
    pub env: Vec<String>,
    /// `WorkingDir` (empty: `/`).
    pub working_dir: String,
    /// `User` (`uid[:gid]` or names; empty: root).
    pub user: String,
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl ImageRuntime {
    /// Reads the image config of `manifest`; `name` names the image in errors.
    pub fn of_manifest(name: &str, manifest: &Manifest) -> Result<Self, ContainerError> {
        Self::from_annotation(name, manifest.annotations().get(IMAGE_CONFIG_ANNOTATION))
    }

    /// Reads the manifest annotation [`IMAGE_CONFIG_ANNOTATION`]; `name` names the image in
    /// errors.
    pub fn from_annotation(
        name: &str,
        annotation: Option<&String>,
    ) -> Result<Self, ContainerError> {
        let text = annotation.ok_or_else(|| ContainerError::Image {
            image: name.to_string(),
            reason: "not a container image (index it with `thaw index image`)".into(),
        })?;
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ContainerError::Image {
                image: name.to_string(),
                reason: format!("image config annotation: {e}"),
            })?;
        Ok(ImageRuntime {
            entrypoint: strings(&v["entrypoint"]),
            cmd: strings(&v["cmd"]),
            env: strings(&v["env"]),
            working_dir: v["working_dir"].as_str().unwrap_or_default().to_string(),
            user: v["user"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// The process's arguments as docker computes them: the entrypoint (or `entrypoint`, when
    /// given) followed by `args` when given, else by the image's `Cmd`.
    pub fn args(&self, args: &[String], entrypoint: Option<&[String]>) -> Vec<String> {
        let mut out: Vec<String> =
            entrypoint.map_or_else(|| self.entrypoint.clone(), <[String]>::to_vec);
        if args.is_empty() && entrypoint.is_none() {
            out.extend(self.cmd.iter().cloned());
        } else {
            out.extend(args.iter().cloned());
        }
        out
    }

    /// The environment: the image's, a default `PATH` when it has none, then `extra`
    /// (`KEY=VALUE`, replacing the image's value of KEY).
    pub fn environment(&self, extra: &[String]) -> Vec<String> {
        let mut env: Vec<String> = self.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        for e in extra {
            let key = e.split('=').next().unwrap_or(e);
            env.retain(|old| old.split('=').next() != Some(key));
            env.push(e.clone());
        }
        env
    }
}

/// Looks `name` up in a passwd- or group-style file (`name:x:id:...`).
fn lookup(file: &Path, name: &str) -> Option<(u32, Option<u32>)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name))
            .then(|| {
                Some((
                    fields.get(2)?.parse().ok()?,
                    fields.get(3).and_then(|g| g.parse().ok()),
                ))
            })
            .flatten()
    })
}

/// Resolves a config `User` (`uid`, `uid:gid`, `name`, `name:group`) against the image's
/// `/etc/passwd` and `/etc/group` under `rootfs`.
pub fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32), ContainerError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let unknown = |what: &str| ContainerError::Image {
        image: rootfs.display().to_string(),
        reason: format!("user {user:?}: no {what} of that name in the image"),
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => lookup(&rootfs.join("etc/passwd"), u).ok_or_else(|| unknown("user"))?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                lookup(&rootfs.join("etc/group"), g)
                    .ok_or_else(|| unknown("group"))?
                    .0
            }
        },
        None => primary.unwrap_or(0),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_and_environment_follow_docker() {
        let image = ImageRuntime {
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["--serve".into()],
            env: vec!["PATH=/opt/bin".into(), "MODE=prod".into()],
            ..ImageRuntime::default()
        };
        assert_eq!(image.args(&[], None), ["/bin/app", "--serve"]);
        assert_eq!(image.args(&["--once".into()], None), ["/bin/app", "--once"]);
        assert_eq!(
            image.args(&["x".into()], Some(&["/bin/sh".into()])),
            ["/bin/sh", "x"]
        );
        assert_eq!(
            image.environment(&["MODE=test".into()]),
            ["PATH=/opt/bin", "MODE=test"]
        );
        assert!(ImageRuntime::default().environment(&[])[0].starts_with("PATH=/usr/local/sbin"));
    }

    #[test]
    fn users_resolve_by_number_or_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user("", dir.path()).unwrap(), (0, 0));
        assert_eq!(resolve_user("1234", dir.path()).unwrap(), (1234, 0));
        assert_eq!(resolve_user("app", dir.path()).unwrap(), (1000, 1001));
        assert_eq!(resolve_user("app:staff", dir.path()).unwrap(), (1000, 50));
        assert_eq!(resolve_user("7:8", dir.path()).unwrap(), (7, 8));
        let err = resolve_user("nobody", dir.path()).unwrap_err().to_string();
        assert!(err.contains("\"nobody\""), "{err}");
    }
}
