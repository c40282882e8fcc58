//! Reading the journal back: the files under `modules/<name>/events/`, newest first.
//!
//! File names begin with the time, so most filtering (`since`, `entity`) and all ordering is
//! done on names alone; only the files that may be shown are opened. A file a person broke by
//! hand is skipped with a warning, never a reason to fail the whole listing.

use std::collections::BinaryHeap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use kai_core::journal::{entity_slug, file_timestamp, name_has_slug, stamp_of};
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
        for name in file_names(data, module) {
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
    // A heap, not a sort: only the newest few are usually wanted.
    let mut names = BinaryHeap::from(names);
    let mut listing = Listing::default();
    let limit = q.limit.unwrap_or(usize::MAX);
    while let Some((name, i)) = names.pop() {
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

/// Directories with fewer files than this are simply read; the listing is not worth keeping.
const CACHE_FROM: usize = 5000;

/// The names of a module's journal files. Reading a directory of 100,000 names costs tens of
/// milliseconds, so for big ones the names are kept in `cache/journal/<module>.names`, and that
/// copy is used while the directory is provably unchanged: same inode, mtime and ctime, and the
/// mtime at least a second older than the copy (a change made in the same clock tick as the
/// listing would not move the mtime; one made a second later always does). The files stay the
/// truth: the copy only ever saves a directory read.
fn file_names(data: &DataDir, module: &str) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let dir = data.events_dir(module);
    let Ok(meta) = std::fs::metadata(&dir) else {
        return Vec::new();
    };
    let stamp = format!(
        "v1 {} {} {} {}",
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime_nsec()
    );
    let cache = data
        .root()
        .join("cache/journal")
        .join(format!("{module}.names"));
    if let Ok(text) = std::fs::read_to_string(&cache) {
        let mut lines = text.lines();
        let head = lines.next().unwrap_or_default();
        if let Some((recorded, written)) = head.rsplit_once(' ') {
            let written: i64 = written.parse().unwrap_or(0);
            if recorded == stamp && meta.mtime() < written - 1 {
                return lines.map(str::to_owned).collect();
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| file_timestamp(n).is_some())
        .collect();
    if names.len() >= CACHE_FROM {
        let now = chrono::Utc::now().timestamp();
        let mut text = format!("{stamp} {now}\n");
        for n in &names {
            text.push_str(n);
            text.push('\n');
        }
        let _ = std::fs::create_dir_all(cache.parent().expect("has a parent"))
            .and_then(|()| crate::data_dir::write_atomic(&cache, text.as_bytes(), 0o600));
    }
    names
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
