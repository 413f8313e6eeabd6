//! The shared bearer token between peers and clients.
//!
//! Every chunk and inventory request carries `Authorization: Bearer TOKEN`; a server with a
//! token answers 401 to anything else. Since a chunk request can make a server fetch from the
//! object store and keep the chunk, no request that fills a cache is served without it.

use std::path::Path;

use crate::{Error, Result};

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_CHARS: usize = 16;

/// A bearer token; `Debug` does not print it.
#[derive(Clone)]
pub struct Token {
    value: String,
    digest: blake3::Hash,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token from its text; `origin` names where it came from in errors.
    pub fn new(value: &str, origin: &str) -> Result<Self> {
        let value = value.trim();
        let bad = |reason: String| Error::BadToken {
            origin: origin.to_string(),
            reason,
        };
        if value.chars().count() < MIN_TOKEN_CHARS {
            return Err(bad(format!(
                "shorter than {MIN_TOKEN_CHARS} characters (make one with `openssl rand -hex 32`)"
            )));
        }
        if !value.chars().all(|c| c.is_ascii_graphic()) {
            return Err(bad("only printable ASCII without spaces is allowed".into()));
        }
        Ok(Token {
            value: value.to_string(),
            digest: blake3::hash(value.as_bytes()),
        })
    }

    /// A token read from `path` (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Token::new(&text, &path.display().to_string())
    }

    /// The `Authorization` header value.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.value)
    }

    /// True when an `Authorization` header value carries this token. The comparison takes the
    /// same time wherever the values differ (blake3 hashes compare in constant time).
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(presented) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        blake3::hash(presented.trim().as_bytes()) == self.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_only_the_same_token_as_a_bearer() {
        let token = Token::new("0123456789abcdef0123\n", "test").unwrap();
        assert!(token.admits(Some("Bearer 0123456789abcdef0123")));
        assert!(!token.admits(Some("Bearer 0123456789abcdef0124")));
        assert!(!token.admits(Some("Basic 0123456789abcdef0123")));
        assert!(!token.admits(None));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }

    #[test]
    fn short_or_odd_tokens_are_refused_naming_their_origin() {
        let err = Token::new("short", "/etc/thaw/token")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/thaw/token") && err.contains("16"),
            "{err}"
        );
        let err = Token::new("has a space in the middle", "env")
            .unwrap_err()
            .to_string();
        assert!(err.contains("printable"), "{err}");
    }
}
