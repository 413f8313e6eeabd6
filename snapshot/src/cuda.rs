//! CUDA process checkpoints through the driver API (`cuCheckpointProcess*`, driver >= 550).
//!
//! CRIU cannot dump GPU memory. Before the dump, the driver is asked to lock the process's CUDA
//! state (no more CUDA calls) and to checkpoint it: device memory is copied into the process's
//! host memory and the device handles released, so CRIU sees an ordinary process. After a restore
//! the driver restores device memory from that host copy and unlocks the process.
//!
//! libcuda is loaded at run time (libloading): thaw builds and runs without a GPU or a CUDA
//! toolkit, and a host without the driver, or with one too old for this API, gets an error saying
//! which.

use std::ffi::c_int;

use crate::{Result, SnapshotError};

/// `CUresult` (0 is success).
type CuResult = c_int;

/// The driver's process states (`CUprocessState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    /// CUDA calls run normally.
    Running,
    /// CUDA calls block.
    Locked,
    /// Device memory is in host memory; device handles are released.
    Checkpointed,
    /// An uncorrectable error during checkpoint or restore.
    Failed,
    /// A state this thaw does not know.
    Other(c_int),
}

impl From<c_int> for ProcessState {
    fn from(code: c_int) -> Self {
        match code {
            0 => ProcessState::Running,
            1 => ProcessState::Locked,
            2 => ProcessState::Checkpointed,
            3 => ProcessState::Failed,
            other => ProcessState::Other(other),
        }
    }
}

/// `CUcheckpointLockArgs`: a timeout and reserved fields that must be zero.
#[repr(C)]
struct LockArgs {
    timeout_ms: u32,
    reserved0: u32,
    reserved1: [u64; 7],
}

type InitFn = unsafe extern "C" fn(flags: u32) -> CuResult;
type GetStateFn = unsafe extern "C" fn(pid: c_int, state: *mut c_int) -> CuResult;
type LockFn = unsafe extern "C" fn(pid: c_int, args: *mut LockArgs) -> CuResult;
type PidArgsFn = unsafe extern "C" fn(pid: c_int, args: *mut std::ffi::c_void) -> CuResult;

/// The checkpoint entry points of a loaded libcuda.
pub struct CudaCheckpoint {
    get_state: GetStateFn,
    lock: LockFn,
    checkpoint: PidArgsFn,
    restore: PidArgsFn,
    unlock: PidArgsFn,
    // Keeps the function pointers above valid.
    _lib: libloading::Library,
}

impl std::fmt::Debug for CudaCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CudaCheckpoint(libcuda.so.1)")
    }
}

impl CudaCheckpoint {
    /// Loads libcuda.so.1 and initialises the driver; an error says whether the driver is
    /// missing or too old for the checkpoint API.
    pub fn load() -> Result<Self> {
        // SAFETY: loading the NVIDIA driver library runs its initialisers, which is what every
        // CUDA program does; the symbols are then typed as the CUDA driver API declares them.
        unsafe {
            let lib = libloading::Library::new("libcuda.so.1").map_err(|e| {
                SnapshotError::CudaUnavailable(format!("no NVIDIA driver library: {e}"))
            })?;
            let symbol = |name: &str| -> Result<*const ()> {
                lib.get::<*const ()>(name.as_bytes())
                    .map(|s| *s)
                    .map_err(|_| {
                        SnapshotError::CudaUnavailable(format!(
                            "the NVIDIA driver has no {name} (the checkpoint API needs driver >= 550)"
                        ))
                    })
            };
            let init: InitFn = std::mem::transmute(symbol("cuInit")?);
            let api = CudaCheckpoint {
                get_state: std::mem::transmute::<*const (), GetStateFn>(symbol(
                    "cuCheckpointProcessGetState",
                )?),
                lock: std::mem::transmute::<*const (), LockFn>(symbol("cuCheckpointProcessLock")?),
                checkpoint: std::mem::transmute::<*const (), PidArgsFn>(symbol(
                    "cuCheckpointProcessCheckpoint",
                )?),
                restore: std::mem::transmute::<*const (), PidArgsFn>(symbol(
                    "cuCheckpointProcessRestore",
                )?),
                unlock: std::mem::transmute::<*const (), PidArgsFn>(symbol(
                    "cuCheckpointProcessUnlock",
                )?),
                _lib: lib,
            };
            check("cuInit", 0, init(0))?;
            Ok(api)
        }
    }

    /// The CUDA state of process `pid`.
    pub fn state(&self, pid: u32) -> Result<ProcessState> {
        let mut state: c_int = -1;
        // SAFETY: the driver writes one int through the pointer.
        check("cuCheckpointProcessGetState", pid, unsafe {
            (self.get_state)(pid as c_int, &mut state)
        })?;
        Ok(ProcessState::from(state))
    }

    /// Locks `pid`'s CUDA state, waiting up to `timeout_ms` for its CUDA calls in flight.
    pub fn lock(&self, pid: u32, timeout_ms: u32) -> Result<()> {
        let mut args = LockArgs {
            timeout_ms,
            reserved0: 0,
            reserved1: [0; 7],
        };
        // SAFETY: the args struct has the layout the driver declares and lives for the call.
        check("cuCheckpointProcessLock", pid, unsafe {
            (self.lock)(pid as c_int, &mut args)
        })
    }

    /// Moves `pid`'s device memory into its host memory and releases its device handles.
    pub fn checkpoint(&self, pid: u32) -> Result<()> {
        // SAFETY: no optional arguments.
        check("cuCheckpointProcessCheckpoint", pid, unsafe {
            (self.checkpoint)(pid as c_int, std::ptr::null_mut())
        })
    }

    /// Brings `pid`'s device memory back from its host copy.
    pub fn restore(&self, pid: u32) -> Result<()> {
        // SAFETY: no optional arguments.
        check("cuCheckpointProcessRestore", pid, unsafe {
            (self.restore)(pid as c_int, std::ptr::null_mut())
        })
    }

    /// Lets `pid` make CUDA calls again.
    pub fn unlock(&self, pid: u32) -> Result<()> {
        // SAFETY: no optional arguments.
        check("cuCheckpointProcessUnlock", pid, unsafe {
            (self.unlock)(pid as c_int, std::ptr::null_mut())
        })
    }
}

fn check(call: &'static str, pid: u32, code: CuResult) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(SnapshotError::Cuda { call, pid, code })
    }
}

/// How long a lock waits for CUDA calls in flight to finish.
pub const LOCK_TIMEOUT_MS: u32 = 10_000;

impl CudaCheckpoint {
    /// Before a dump: locks every process of `pids`, then moves their device memory into host
    /// memory. On failure the processes already touched are given their GPU state back.
    pub fn suspend(&self, pids: &[u32]) -> Result<()> {
        for (i, pid) in pids.iter().enumerate() {
            if let Err(e) = self.lock(*pid, LOCK_TIMEOUT_MS) {
                self.resume_quietly(&pids[..i]);
                return Err(e);
            }
        }
        for (i, pid) in pids.iter().enumerate() {
            if let Err(e) = self.checkpoint(*pid) {
                for done in &pids[..i] {
                    let _ = self.restore(*done);
                }
                self.resume_quietly(pids);
                return Err(e);
            }
        }
        Ok(())
    }

    /// After a restore (or a dump that leaves the processes running): device memory back from
    /// the host copies, then CUDA calls unlocked.
    pub fn resume(&self, pids: &[u32]) -> Result<()> {
        for pid in pids {
            if self.state(*pid)? == ProcessState::Checkpointed {
                self.restore(*pid)?;
            }
        }
        for pid in pids {
            self.unlock(*pid)?;
        }
        Ok(())
    }

    fn resume_quietly(&self, pids: &[u32]) {
        if let Err(e) = self.resume(pids) {
            tracing::warn!(error = %e, "could not give processes their GPU state back");
        }
    }
}

/// The processes of the tree rooted at `root` that use CUDA, root first.
pub fn cuda_processes(root: u32) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for pid in crate::host::process_tree(root)? {
        if uses_cuda(pid)? {
            out.push(pid);
        }
    }
    Ok(out)
}

/// True when process `pid` has the NVIDIA driver library mapped (it uses CUDA).
pub fn uses_cuda(pid: u32) -> Result<bool> {
    let path = format!("/proc/{pid}/maps");
    let maps = std::fs::read_to_string(&path).map_err(|e| SnapshotError::Process {
        pid,
        reason: format!("reading {path}: {e}"),
    })?;
    Ok(maps.lines().any(|l| l.contains("libcuda.so")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_from_the_driver_codes() {
        assert_eq!(ProcessState::from(2), ProcessState::Checkpointed);
        assert_eq!(ProcessState::from(9), ProcessState::Other(9));
        assert_eq!(
            std::mem::size_of::<LockArgs>(),
            64,
            "CUcheckpointLockArgs is 64 bytes"
        );
    }

    #[test]
    fn without_a_driver_loading_says_so_and_processes_are_not_cuda() {
        match CudaCheckpoint::load() {
            Ok(api) => {
                eprintln!("libcuda present: checking our own (non-CUDA) state query");
                let _ = api.state(std::process::id());
            }
            Err(e) => {
                let text = e.to_string();
                thaw_sys::skip::skipped("CUDA checkpoint calls", &text);
                assert!(text.contains("NVIDIA driver"), "{text}");
            }
        }
        assert!(!uses_cuda(std::process::id()).unwrap());
    }
}
