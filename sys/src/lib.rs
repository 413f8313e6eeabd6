//! thaw-sys: the small Linux helpers several thaw crates need, in one place so that none of them
//! borrows another's: finding an executable ([`which`]), mounting and unmounting ([`mount`]),
//! watching a process that is not our child ([`process`]), copying a tree whole ([`tree`]),
//! facts about the host ([`host`]) and how a test reports that it cannot run here ([`skip`]).
//!
//! It owns no thaw format or policy; each function is a thin, checked wrapper over a system call
//! or a file under /proc, with errors that name the path or process they concern.
//!
//! ```no_run
//! let runc = thaw_sys::which("runc").expect("runc is installed");
//! println!("{} on Linux {}", runc.display(), thaw_sys::host::kernel_release().unwrap());
//! ```

pub mod host;
pub mod mount;
pub mod process;
pub mod skip;
pub mod tree;
mod which;

pub use mount::MountError;
pub use which::which;
