//! OCI runtime bundles for `thaw run`: the image config's runtime fields (from the manifest's
//! annotation) become a runtime spec (`config.json`) that crun or runc starts over a rootfs.

use std::path::Path;

use serde_json::json;

use crate::IndexError;

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
    /// Reads the manifest annotation [`super::CONFIG_ANNOTATION`]; `name` names the image in
    /// errors.
    pub fn from_annotation(name: &str, annotation: Option<&String>) -> Result<Self, IndexError> {
        let text = annotation.ok_or_else(|| IndexError::Image {
            image: name.to_string(),
            reason: "not a container image (index it with `thaw index image`)".into(),
        })?;
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| IndexError::Image {
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
pub fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32), IndexError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let unknown = |what: &str| IndexError::Image {
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

/// The runtime spec (`config.json`) for a process with `args`, `env`, `cwd`, `uid`/`gid` in
/// the rootfs at `rootfs` (relative to the bundle or absolute). The container gets its own pid,
/// ipc, uts and mount namespaces and shares the host's network (an inference server's port is
/// the host's); resource limits are inherited (raising them needs CAP_SYS_RESOURCE).
pub fn runtime_spec(
    args: &[String],
    env: &[String],
    cwd: &str,
    (uid, gid): (u32, u32),
    rootfs: &Path,
    hostname: &str,
) -> serde_json::Value {
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": if cwd.is_empty() { "/" } else { cwd },
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
                "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
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
