//! containerd's API types and services, generated at build time from the vendored .proto files
//! (modules nested as the protobuf packages are, so cross-package paths resolve).
#![allow(missing_docs, clippy::all)]

/// `containerd.*` packages.
pub mod containerd {
    /// `containerd.types`: mounts and descriptors.
    pub mod types {
        include!(concat!(env!("OUT_DIR"), "/containerd.types.rs"));
    }
    /// `containerd.services.*`.
    pub mod services {
        /// Snapshots.
        pub mod snapshots {
            /// v1.
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/containerd.services.snapshots.v1.rs"
                ));
            }
        }
        /// Content.
        pub mod content {
            /// v1.
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/containerd.services.content.v1.rs"
                ));
            }
        }
        /// Images.
        pub mod images {
            /// v1.
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/containerd.services.images.v1.rs"
                ));
            }
        }
        /// Leases.
        pub mod leases {
            /// v1.
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/containerd.services.leases.v1.rs"
                ));
            }
        }
    }
}

pub use containerd::services::snapshots::v1 as snapshots;
pub use containerd::types;
