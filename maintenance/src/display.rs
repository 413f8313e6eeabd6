//! How the reports read in a terminal (the CLI prints these; `--json` prints the serde form).

use std::fmt;

use crate::check::CheckReport;
use crate::gc::{Count, GcReport};
use crate::repair::RepairReport;

/// Bytes in binary units (`1.5 GiB`).
fn size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} objects, {}", self.objects, size(self.bytes))
    }
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        writeln!(f, "store: {}", self.before)?;
        for tag in &self.tags_removed {
            writeln!(f, "  tag {tag}: {verb} (retention)")?;
        }
        for tag in &self.dangling_tags {
            writeln!(f, "  tag {tag}: names a manifest that is not in the store")?;
        }
        writeln!(
            f,
            "live: {} manifests, {} packs, {} of chunks",
            self.live_manifests,
            self.live_packs,
            size(self.live_bytes)
        )?;
        let r = &self.repacked;
        if r.packs > 0 {
            let verb = if self.dry_run {
                "would rewrite"
            } else {
                "rewrote"
            };
            writeln!(
                f,
                "repack: {verb} {} packs into {} ({} of live chunks copied, {} maps updated)",
                r.packs,
                r.new_packs,
                size(r.bytes_copied),
                r.maps_rewritten
            )?;
        }
        for skipped in &r.skipped {
            writeln!(f, "  not repacked: {skipped}")?;
        }
        for (kind, count) in &self.deleted {
            writeln!(f, "  {kind:<12} {verb} {count}")?;
        }
        if self.chunks_freed > 0 {
            writeln!(
                f,
                "chunks freed (caches evict them first): {}",
                self.chunks_freed
            )?;
        }
        if self.kept_young.objects > 0 {
            writeln!(
                f,
                "kept (unreferenced, younger than the grace period): {}",
                self.kept_young
            )?;
        }
        let q = &self.requests;
        write!(
            f,
            "{verb} {} in {:.1} s ({} GETs, {} PUTs, {} DELETEs, {} lists/HEADs)",
            self.freed(),
            self.seconds,
            q.gets,
            q.puts,
            q.deletes,
            q.other
        )
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.problems {
            writeln!(f, "BAD {problem}")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        let data = if self.packs_read > 0 {
            format!(
                "; read {} packs ({}), {} frames verified",
                self.packs_read,
                size(self.bytes_read),
                self.frames_verified
            )
        } else {
            String::new()
        };
        let verdict = if self.is_ok() {
            "ok".to_string()
        } else {
            format!("FAILED: {} problems", self.problems.len())
        };
        write!(
            f,
            "{verdict}: {} tags, {} manifests, {} pack indexes, {} chunk locations{data}",
            self.tags, self.manifests, self.indexes, self.locations
        )
    }
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let would = if self.dry_run { "would be " } else { "" };
        for key in &self.indexes_rebuilt {
            writeln!(f, "{key}: {would}rebuilt from its pack")?;
        }
        for problem in &self.bad_frames {
            writeln!(f, "  left out: {problem}")?;
        }
        for key in &self.indexes_removed {
            writeln!(f, "{key}: {would}removed (its pack is gone)")?;
        }
        for key in &self.maps_rebuilt {
            writeln!(f, "{key}: {would}rebuilt from the pack indexes")?;
        }
        for tag in &self.tags_dropped {
            writeln!(f, "tag {}: {would}dropped: {}", tag.name, tag.reason)?;
        }
        for key in &self.layer_pointers_removed {
            writeln!(f, "{key}: {would}removed (its layer tree is gone)")?;
        }
        if self.is_clean() {
            write!(f, "ok: nothing to repair")
        } else {
            write!(
                f,
                "{} indexes rebuilt, {} removed, {} maps rebuilt, {} tags dropped{}",
                self.indexes_rebuilt.len(),
                self.indexes_removed.len(),
                self.maps_rebuilt.len(),
                self.tags_dropped.len(),
                if self.dry_run {
                    " (dry run: nothing changed)"
                } else {
                    ""
                }
            )
        }
    }
}
