//! Reading the journal back: the files under `modules/<name>/events/`, newest first.
//!
//! File names begin with the time, so most filtering (`since`, `entity`) and all ordering is
//! done on names alone; only the files that may be shown are opened. A file a person broke by
//! hand is skipped with a warning, never a reason to fail the whole listing.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use kai_core::journal::{entity_slug, file_timestamp, stamp_of};
use kai_core::{JournalEntry, JournalStatus};

use crate::data_dir::DataDir;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub entity: Option<String>,
    pub status: Option<JournalStatus>,
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<usize>,
}

/// One journal file, read.
#[derive(Debug, Clone)]
pub struct Listed {
    pub entry: JournalEntry,
    pub path: PathBuf,
}

/// The result of a listing.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Listed>,
    /// Files that could not be read or parsed.
    pub warnings: Vec<String>,
}

/// Whether a file name can belong to an entity with this slug: `<stamp>_<slug>.json` or
/// `<stamp>_<slug>_<n>.json`.
fn name_has_slug(name: &str, slug: &str) -> bool {
    let Some(rest) = name.get(20..).and_then(|r| r.strip_suffix(".json")) else {
        return false;
    };
    match rest.strip_prefix(slug) {
        Some("") => true,
        Some(tail) => tail
            .strip_prefix('_')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

/// Lists the journal of `modules` (every module directory when empty), newest first.
pub fn list(data: &DataDir, modules: &[String], q: &Query) -> Listing {
    let modules: Vec<String> = if modules.is_empty() {
        module_dirs(data)
    } else {
        modules.to_vec()
    };
    let since = q.since.map(stamp_of);
    let slug = q.entity.as_deref().map(entity_slug);
    let mut names: Vec<(String, usize)> = Vec::new();
    for (i, module) in modules.iter().enumerate() {
        let Ok(dir) = std::fs::read_dir(data.events_dir(module)) else {
            continue;
        };
        for entry in dir.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(stamp) = file_timestamp(&name) else {
                continue;
            };
            if since.as_deref().is_some_and(|s| stamp < s) {
                continue;
            }
            if slug.as_deref().is_some_and(|s| !name_has_slug(&name, s)) {
                continue;
            }
            names.push((name, i));
        }
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    let mut listing = Listing::default();
    let limit = q.limit.unwrap_or(usize::MAX);
    for (name, i) in names {
        if listing.entries.len() >= limit {
            break;
        }
        let path = data.events_dir(&modules[i]).join(&name);
        let entry = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<JournalEntry>(&b).map_err(|e| e.to_string()))
        {
            Ok(entry) => entry,
            Err(e) => {
                listing.warnings.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        if q.entity.as_ref().is_some_and(|e| *e != entry.entity) {
            continue;
        }
        if q.status.is_some_and(|s| s != entry.status) {
            continue;
        }
        if q.since.is_some_and(|s| entry.timestamp < s) {
            continue;
        }
        listing.entries.push(Listed { entry, path });
    }
    listing
}

/// Every directory under `modules/`, sorted: user modules and built-ins' data alike.
pub fn module_dirs(data: &DataDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.modules_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| kai_core::name::check(n).is_ok())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_matching_on_names() {
        assert!(name_has_slug(
            "2026-04-04T14:23:01_octo-repo_42.json",
            "octo-repo_42"
        ));
        assert!(name_has_slug(
            "2026-04-04T14:23:01_octo-repo_42_2.json",
            "octo-repo_42"
        ));
        assert!(!name_has_slug(
            "2026-04-04T14:23:01_octo-repo_42.json",
            "octo-repo_4"
        ));
        assert!(!name_has_slug(
            "2026-04-04T14:23:01_octo-repo_42_x.json",
            "octo-repo_42"
        ));
    }
}
