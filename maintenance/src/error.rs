//! Errors of store maintenance: each says what failed and that nothing unsafe was done.

/// What went wrong in gc, check or repair.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A store request failed (the error names the object).
    #[error(transparent)]
    Store(#[from] thaw_core::Error),
    /// Something reachable from a tag cannot be read, so gc cannot know what it needs: it stops
    /// before deleting anything.
    #[error("{what}, reachable from tag {tag}, cannot be read: {source}; gc deleted nothing (run `thaw check`, then `thaw repair`)")]
    Unreadable {
        /// The object (e.g. `maps/<id>`).
        what: String,
        /// The tag it is reachable from.
        tag: String,
        /// Why it cannot be read.
        #[source]
        source: Box<thaw_core::Error>,
    },
    /// A retention rule that cannot be applied.
    #[error("retention rule {rule}: {reason}")]
    Retention {
        /// The rule as given.
        rule: String,
        /// Why it is refused.
        reason: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
