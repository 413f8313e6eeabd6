//! Starting an image's process chrooted into its root in the host's namespaces, without an OCI
//! runtime: what CRIU can dump from outside (a runtime's private namespaces need the runtime's
//! own checkpoint support). The root should be a [`crate::rootfs::ChrootRoot`].

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use crate::logs::RunLogs;
use crate::ContainerError;

/// The process to start: arguments, `KEY=VALUE` environment, working directory, user.
#[derive(Clone, Debug)]
pub struct ChrootProcess<'a> {
    /// The program and its arguments (the program is looked up inside the root).
    pub args: &'a [String],
    /// The whole environment, `KEY=VALUE`.
    pub env: &'a [String],
    /// The working directory inside the root (empty: `/`).
    pub cwd: &'a str,
    /// The user and group ids.
    pub user: (u32, u32),
}

/// Starts `process` chrooted into `rootfs` as the leader of a new session (so it and its
/// children can be dumped and killed as one tree), output to `logs`; killed if the handle drops.
pub fn spawn(
    rootfs: &Path,
    process: &ChrootProcess<'_>,
    logs: &RunLogs,
) -> Result<tokio::process::Child, ContainerError> {
    let nul = |what: &str| ContainerError::Image {
        image: rootfs.display().to_string(),
        reason: format!("{what} holds a NUL byte"),
    };
    let program = process.args.first().ok_or_else(|| ContainerError::Image {
        image: rootfs.display().to_string(),
        reason: "no command to run".into(),
    })?;
    let root_c = CString::new(rootfs.as_os_str().as_bytes()).map_err(|_| nul("the root path"))?;
    let cwd = if process.cwd.is_empty() {
        "/"
    } else {
        process.cwd
    };
    let cwd_c = CString::new(cwd).map_err(|_| nul("the working directory"))?;
    let (uid, gid) = process.user;
    let (stdout, stderr) = logs.create()?;
    let mut command = std::process::Command::new(program);
    command
        .args(&process.args[1..])
        .env_clear()
        .envs(process.env.iter().filter_map(|kv| kv.split_once('=')))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let check = |rc: libc::c_int| match rc {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            };
            check(if libc::setsid() < 0 { -1 } else { 0 })?;
            check(libc::chroot(root_c.as_ptr()))?;
            check(libc::chdir(cwd_c.as_ptr()))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
            Ok(())
        });
    }
    tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ContainerError::Spawn {
            program: format!("{program} in {}", rootfs.display()),
            source,
        })
}
