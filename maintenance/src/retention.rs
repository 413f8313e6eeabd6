//! Retention: keep the newest N tags under a prefix, remove the rest (before gc marks, so what
//! only they reached is collected in the same run).
//!
//! "Newest" is when a tag was pointed at its current manifest: the time on its first line
//! (thaw records it with every version), or for a tag written before times were recorded, the
//! last-modified time of its object.

use crate::mark::TagState;
use crate::{Error, Result};

/// Keep the newest `keep_last` tags whose names start with `prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Tag name prefix (`ci/app:` keeps N of `ci/app:*`).
    pub prefix: String,
    /// How many to keep.
    pub keep_last: usize,
}

/// Takes the tags the rules do not keep out of `tags` and returns them. A rule with an empty
/// prefix is refused (it would judge every tag, snapshots included, by one count).
pub fn apply_retention(tags: &mut Vec<TagState>, rules: &[Retention]) -> Result<Vec<TagState>> {
    let mut removed = Vec::new();
    for rule in rules {
        if rule.prefix.is_empty() {
            return Err(Error::Retention {
                rule: format!("--keep-last {}", rule.keep_last),
                reason: "needs a non-empty --prefix".into(),
            });
        }
        let mut matching: Vec<usize> = (0..tags.len())
            .filter(|&i| tags[i].name.starts_with(&rule.prefix))
            .collect();
        matching.sort_by(|&a, &b| {
            tags[b]
                .set_unix_ms()
                .cmp(&tags[a].set_unix_ms())
                .then_with(|| tags[b].name.cmp(&tags[a].name))
        });
        let mut drop: Vec<usize> = matching.into_iter().skip(rule.keep_last).collect();
        drop.sort_unstable_by(|a, b| b.cmp(a));
        for i in drop {
            removed.push(tags.remove(i));
        }
    }
    removed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use thaw_core::store::TagVersion;
    use thaw_core::ChunkId;

    fn tag(name: &str, set: Option<u64>, modified: u64) -> TagState {
        TagState {
            name: name.into(),
            versions: vec![TagVersion {
                manifest: ChunkId::of(name.as_bytes()),
                set_unix_ms: set,
            }],
            modified_unix_ms: modified,
        }
    }

    #[test]
    fn the_newest_n_under_a_prefix_stay_and_old_tags_use_their_object_time() {
        let mut tags = vec![
            tag("app:1", Some(100), 999),
            tag("app:2", Some(200), 999),
            tag("app:3", None, 300), // written before tags had times
            tag("app:4", Some(250), 999),
            tag("base", Some(1), 1),
        ];
        let removed = apply_retention(
            &mut tags,
            &[Retention {
                prefix: "app:".into(),
                keep_last: 2,
            }],
        )
        .unwrap();
        let names = |t: &[TagState]| t.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&removed), ["app:1", "app:2"]);
        assert_eq!(names(&tags), ["app:3", "app:4", "base"]);
        let everything = Retention {
            prefix: String::new(),
            keep_last: 1,
        };
        assert!(apply_retention(&mut tags, &[everything]).is_err());
    }
}
