//! The OCI runtime spec (`config.json`) a bundle holds, and writing the bundle.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::{io_error, ContainerError};

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

/// Writes `spec` as `bundle/config.json` (creating `bundle`) and returns `bundle`.
pub fn write_bundle(bundle: &Path, spec: &serde_json::Value) -> Result<PathBuf, ContainerError> {
    std::fs::create_dir_all(bundle).map_err(io_error(bundle))?;
    let config = bundle.join("config.json");
    let text = serde_json::to_vec_pretty(spec).expect("a JSON value serialises");
    std::fs::write(&config, text).map_err(io_error(&config))?;
    Ok(bundle.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_holds_the_process_and_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let spec = runtime_spec(
            &["/bin/app".into(), "--serve".into()],
            &["PATH=/bin".into()],
            "",
            (1000, 50),
            &rootfs,
            "thaw",
        );
        let bundle = write_bundle(&dir.path().join("bundle"), &spec).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        assert_eq!(written["process"]["args"], json!(["/bin/app", "--serve"]));
        assert_eq!(written["process"]["cwd"], "/");
        assert_eq!(written["process"]["user"], json!({"uid": 1000, "gid": 50}));
        assert_eq!(written["root"]["path"], json!(rootfs));
        assert_eq!(written["hostname"], "thaw");
    }
}
