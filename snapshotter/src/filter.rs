//! containerd's filter expressions for List (its `filters` package): a request's filters are
//! alternatives (any may match), each a comma-separated list of conditions that must all hold.
//! A condition is a field path (`name`, `parent`, `kind`, `labels.KEY`, each part bare or
//! double-quoted), optionally followed by `==VALUE` or `!=VALUE` (bare or quoted); a path alone
//! asks that the field be present. containerd's metadata store sends such filters when it looks
//! for the remote snapshot a Prepare reported as existing:
//! `labels."containerd.io/snapshot.ref"==sha256:…,parent=="default/3/…"`. Regular-expression
//! matches (`~=`) are refused with a clear error rather than guessed at.

use crate::metadata::Snapshot;
use crate::{Result, SnapshotterError};

/// A field a condition looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Field {
    Name,
    Parent,
    Kind,
    Label(String),
}

/// What a condition asks of its field.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Test {
    Present,
    Equals(String),
    Differs(String),
}

/// One condition.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Condition {
    field: Field,
    test: Test,
}

/// A parsed request: alternatives of all-of conditions (no alternatives: everything matches).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    alternatives: Vec<Vec<Condition>>,
}

fn bad(filter: &str, reason: impl std::fmt::Display) -> SnapshotterError {
    SnapshotterError::InvalidArgument(format!("filter {filter:?}: {reason}"))
}

/// Reads a bare or quoted token from `rest`, stopping (for a bare one) at any of `stops`.
fn token<'a>(filter: &str, rest: &'a str, stops: &[char]) -> Result<(String, &'a str)> {
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((out, &quoted[i + 1..])),
                '\\' => match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => return Err(bad(filter, "a quote is not closed")),
                },
                c => out.push(c),
            }
        }
        return Err(bad(filter, "a quote is not closed"));
    }
    let end = rest.find(|c| stops.contains(&c)).unwrap_or(rest.len());
    Ok((rest[..end].to_string(), &rest[end..]))
}

fn condition<'a>(filter: &str, rest: &'a str) -> Result<(Condition, &'a str)> {
    let (first, mut rest) = token(filter, rest, &['.', '=', '!', '~', ','])?;
    let field = match first.as_str() {
        "name" => Field::Name,
        "parent" => Field::Parent,
        "kind" => Field::Kind,
        "labels" => {
            let Some(after) = rest.strip_prefix('.') else {
                return Err(bad(filter, "labels needs a key (labels.KEY)"));
            };
            let (key, after) = token(filter, after, &['=', '!', '~', ','])?;
            rest = after;
            Field::Label(key)
        }
        other => return Err(bad(filter, format!("unknown field {other:?}"))),
    };
    let (test, rest) = if let Some(value) = rest.strip_prefix("==") {
        let (v, rest) = token(filter, value, &[','])?;
        (Test::Equals(v), rest)
    } else if let Some(value) = rest.strip_prefix("!=") {
        let (v, rest) = token(filter, value, &[','])?;
        (Test::Differs(v), rest)
    } else if rest.starts_with("~=") {
        return Err(bad(
            filter,
            "regular-expression matches (~=) are not supported",
        ));
    } else if rest.is_empty() || rest.starts_with(',') {
        (Test::Present, rest)
    } else {
        return Err(bad(filter, format!("unexpected {rest:?}")));
    };
    Ok((Condition { field, test }, rest))
}

impl Filter {
    /// Parses a List request's filters.
    pub fn parse(filters: &[String]) -> Result<Self> {
        let mut alternatives = Vec::new();
        for filter in filters.iter().filter(|f| !f.trim().is_empty()) {
            let mut conditions = Vec::new();
            let mut rest = filter.trim();
            loop {
                let (c, after) = condition(filter, rest.trim_start())?;
                conditions.push(c);
                match after.strip_prefix(',') {
                    Some(next) => rest = next,
                    None if after.trim().is_empty() => break,
                    None => return Err(bad(filter, format!("unexpected {after:?}"))),
                }
            }
            alternatives.push(conditions);
        }
        Ok(Filter { alternatives })
    }

    /// Whether `snapshot` passes.
    pub fn matches(&self, snapshot: &Snapshot) -> bool {
        self.alternatives.is_empty()
            || self
                .alternatives
                .iter()
                .any(|all| all.iter().all(|c| holds(c, snapshot)))
    }
}

fn holds(condition: &Condition, snapshot: &Snapshot) -> bool {
    let value: Option<&str> = match &condition.field {
        Field::Name => Some(&snapshot.key),
        Field::Parent => Some(&snapshot.parent)
            .filter(|p| !p.is_empty())
            .map(|p| p.as_str()),
        Field::Kind => Some(snapshot.kind.name()),
        Field::Label(key) => snapshot.labels.get(key).map(String::as_str),
    };
    match &condition.test {
        Test::Present => value.is_some(),
        Test::Equals(v) => value.unwrap_or_default() == v,
        Test::Differs(v) => value.unwrap_or_default() != v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Kind;
    use std::collections::BTreeMap;

    fn snapshot(key: &str, parent: &str, labels: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            key: key.into(),
            id: 1,
            kind: Kind::Committed,
            parent: parent.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            created_ns: 0,
            updated_ns: 0,
            layers: None,
        }
    }

    #[test]
    fn the_filter_containerds_metadata_store_sends_matches_only_its_snapshot() {
        let f = Filter::parse(&[
            r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="default/3/sha256:p""#
                .into(),
        ])
        .unwrap();
        let right = snapshot(
            "x",
            "default/3/sha256:p",
            &[("containerd.io/snapshot.ref", "sha256:abc")],
        );
        assert!(f.matches(&right));
        let other_parent = snapshot("y", "", &[("containerd.io/snapshot.ref", "sha256:abc")]);
        assert!(!f.matches(&other_parent));
        let other_ref = snapshot(
            "z",
            "default/3/sha256:p",
            &[("containerd.io/snapshot.ref", "sha256:abd")],
        );
        assert!(!f.matches(&other_ref));
    }

    #[test]
    fn alternatives_presence_and_difference() {
        let f = Filter::parse(&["kind==active".into(), "labels.keep".into()]).unwrap();
        assert!(f.matches(&snapshot("a", "", &[("keep", "")])));
        assert!(!f.matches(&snapshot("a", "", &[])));
        let f = Filter::parse(&["name!=a,parent".into()]).unwrap();
        assert!(f.matches(&snapshot("b", "p", &[])));
        assert!(!f.matches(&snapshot("a", "p", &[])));
        assert!(!f.matches(&snapshot("b", "", &[])));
        assert!(Filter::parse(&[]).unwrap().matches(&snapshot("a", "", &[])));
    }

    #[test]
    fn malformed_filters_are_refused_naming_the_filter() {
        for bad in [
            "size==1",
            "labels",
            "name~=a.*",
            r#"labels."open==1"#,
            "name==a b,",
        ] {
            let e = Filter::parse(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains("filter"), "{bad}: {e}");
        }
    }
}
