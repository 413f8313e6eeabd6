//! thaw-snapshot owns process snapshots: dumping a fully initialised process tree with CRIU,
//! recording what restoring it needs (CRIU version, kernel, CPU features, executable and working
//! directory, TCP policy) in a small JSON file beside the images, checking a host against that
//! record before a restore, and running the restore detached. CUDA processes are first locked and
//! their device memory checkpointed into host memory through the driver API ([`cuda`]). A
//! restore with lazy pages has its memory paged in on first touch by thaw's own userfaultfd
//! server over CRIU's page images, or by CRIU's daemon ([`lazy_pages`]).
//!
//! [`lifecycle`] runs a whole create or restore. Storing the image folder is not this crate's
//! job: the caller implements [`ImageStore`] (the `thaw` binary indexes the folder into the store
//! as a manifest, so two snapshots of similar processes share chunks, and gets it back by
//! extracting or lazily mounting that manifest). This crate only needs a folder.

pub mod criu;
pub mod cuda;
pub mod error;
pub mod host;
pub mod info;
pub mod lazy_pages;
pub mod lifecycle;

pub use criu::{Criu, DumpRequest, RestoreRequest};
pub use error::{Result, SnapshotError};
pub use host::HostFacts;
pub use info::{RootfsMount, SnapshotInfo, SnapshotSummary, INFO_FILE};
pub use lazy_pages::{LazyPages, PagesDaemon};
pub use lifecycle::{FetchedBytes, FetchedImages, ImageStore, RestoreReport};
