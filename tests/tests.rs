//! thaw's end-to-end tests, in one test binary (as ripgrep's tests/tests.rs): each module drives
//! the real `thaw` binary against real parts (a local folder store, a real S3-compatible server,
//! peer cache processes, FUSE mounts, CRIU, an OCI registry, runc, the Python module), with the
//! shared harness in [`common`]. One binary links once instead of once per file. A test that
//! cannot run on this machine prints `SKIPPED <test>: <reason>` and returns.

mod common;

mod bad_input;
mod bench;
mod cache;
mod cluster;
mod container_snapshot;
mod containerd;
mod faults;
mod first_start;
mod image;
mod lifecycle;
mod mount;
mod plan;
mod robustness;
mod s3;
mod snapshot;
mod store_cli;
mod supervised;
mod tls;
mod weights;
mod weights_python;
