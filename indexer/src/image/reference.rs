//! Image references as the command line gives them: `docker://REGISTRY/REPO[:TAG|@DIGEST]`,
//! `oci:DIR[:TAG]` (an OCI image layout) and `docker-archive:FILE` (a `docker save` tarball), the
//! same transports skopeo names.

use std::path::PathBuf;

use crate::IndexError;

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// A registry speaking the OCI distribution protocol.
    Registry {
        /// `REGISTRY/REPO[:TAG|@DIGEST]` as given (without `docker://`).
        reference: String,
    },
    /// An OCI image layout folder and, optionally, the `org.opencontainers.image.ref.name` to
    /// pick from its index.
    Layout {
        /// The folder holding `oci-layout`, `index.json` and `blobs/`.
        dir: PathBuf,
        /// The tag, when the layout holds several images.
        tag: Option<String>,
    },
    /// A `docker save` tarball.
    Archive {
        /// The tar file.
        file: PathBuf,
    },
}

impl std::str::FromStr for ImageRef {
    type Err = IndexError;

    fn from_str(s: &str) -> Result<Self, IndexError> {
        let bad = |reason: &str| IndexError::Unsupported {
            path: s.into(),
            reason: reason.into(),
        };
        if let Some(rest) = s.strip_prefix("docker://") {
            if rest.is_empty() {
                return Err(bad("docker:// needs REGISTRY/REPO[:TAG|@DIGEST]"));
            }
            Ok(ImageRef::Registry {
                reference: rest.to_string(),
            })
        } else if let Some(rest) = s.strip_prefix("oci:") {
            // `oci:DIR:TAG`: a tag never holds '/', so a last ':' followed by one is a path.
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => {
                    (dir, Some(tag.to_string()))
                }
                _ => (rest, None),
            };
            if dir.is_empty() {
                return Err(bad("oci: needs a layout folder (oci:DIR[:TAG])"));
            }
            Ok(ImageRef::Layout {
                dir: dir.into(),
                tag: tag.filter(|t| !t.is_empty()),
            })
        } else if let Some(file) = s.strip_prefix("docker-archive:") {
            if file.is_empty() {
                return Err(bad("docker-archive: needs a file (docker-archive:FILE)"));
            }
            Ok(ImageRef::Archive { file: file.into() })
        } else {
            Err(bad(
                "unknown image reference: use docker://REGISTRY/REPO:TAG, oci:DIR[:TAG] or docker-archive:FILE",
            ))
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Registry { reference } => write!(f, "docker://{reference}"),
            ImageRef::Layout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            ImageRef::Layout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            ImageRef::Archive { file } => write!(f, "docker-archive:{}", file.display()),
        }
    }
}

/// An `OS/ARCH[/VARIANT]` platform to pick from an image index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformSpec {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v8`, ... when given.
    pub variant: Option<String>,
}

impl Default for PlatformSpec {
    fn default() -> Self {
        PlatformSpec {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl std::str::FromStr for PlatformSpec {
    type Err = IndexError;

    fn from_str(s: &str) -> Result<Self, IndexError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(PlatformSpec {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() => Ok(PlatformSpec {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(IndexError::Unsupported {
                path: s.into(),
                reason: "platform must be OS/ARCH[/VARIANT], e.g. linux/amd64".into(),
            }),
        }
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_transports() {
        assert_eq!(
            "docker://127.0.0.1:5000/app:v1"
                .parse::<ImageRef>()
                .unwrap(),
            ImageRef::Registry {
                reference: "127.0.0.1:5000/app:v1".into()
            }
        );
        assert_eq!(
            "oci:/tmp/lay:v2".parse::<ImageRef>().unwrap(),
            ImageRef::Layout {
                dir: "/tmp/lay".into(),
                tag: Some("v2".into())
            }
        );
        assert_eq!(
            "oci:lay".parse::<ImageRef>().unwrap(),
            ImageRef::Layout {
                dir: "lay".into(),
                tag: None
            }
        );
        assert_eq!(
            "docker-archive:/tmp/a.tar".parse::<ImageRef>().unwrap(),
            ImageRef::Archive {
                file: "/tmp/a.tar".into()
            }
        );
        for bad in ["app:v1", "docker://", "oci:", "docker-archive:"] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
        assert_eq!(
            "linux/arm64/v8"
                .parse::<PlatformSpec>()
                .unwrap()
                .to_string(),
            "linux/arm64/v8"
        );
        assert!("linux".parse::<PlatformSpec>().is_err());
    }
}
