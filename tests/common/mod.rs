//! Shared harness for the end-to-end tests, by concern: a private world (store, cache, runtime
//! dir) per test running the real `thaw` binary ([`world`]), test trees and files ([`trees`]),
//! mounts ([`mounts`]), disk cache directories ([`disk_cache`]), loopback networking ([`net`]), a real S3-compatible server ([`s3`]), a
//! fault-injecting proxy ([`fault`]),
//! peer cache servers ([`peers`]), OCI images ([`oci`]) and a real containerd ([`containerd`]).
#![allow(dead_code)]

pub mod containerd;
pub mod disk_cache;
pub mod fault;
pub mod mounts;
pub mod net;
pub mod oci;
pub mod peers;
pub mod s3;
pub mod trees;
pub mod world;

pub use containerd::*;
pub use disk_cache::*;
pub use fault::*;
pub use mounts::*;
pub use net::*;
pub use peers::*;
pub use s3::*;
pub use trees::*;
pub use world::*;
