//! Journal listings for the API, fast on long journals.
//!
//! Listing a journal means reading its directory's names, and on a module with 100,000 journal
//! files that alone takes about 45 ms on an ordinary disk, whatever the query asks for (see
//! docs/PERFORMANCE.md). So the API keeps, per events directory, its journal file names in
//! order, and keeps them current from inotify: a file created, renamed in or out, or removed
//! (by kai or by a person) is in the next listing. The watch is set before the directory is
//! read, so no change falls between the two; a change seen twice (in the read and as an event)
//! changes nothing the second time. When the kernel's event queue overflows, every listing is
//! read again. What is in the files is always read fresh.
//!
//! Without inotify (its limits reached), a listing is kept while the directory's inode, mtime
//! and ctime stay the same, and read again when they change. Two changes within one clock tick
//! leave the same times, so, as git does with its index, such a listing is kept only if the
//! directory had not changed for a second when it was read.
//!
//! The rules of what a query selects are those of [`crate::journal::list`]; the unit tests
//! compare the two.

use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kai_core::journal::{entity_slug, file_timestamp, name_has_slug, stamp_of};
use kai_core::JournalEntry;

use crate::data_dir::DataDir;
use crate::journal::{Listed, Listing, Query};

/// How long a directory must have been unchanged for its listing to be kept without inotify.
const SETTLED: Duration = Duration::from_secs(1);

/// What identifies one state of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirState {
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl DirState {
    fn of(meta: &std::fs::Metadata) -> DirState {
        DirState {
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Journal file names, in order (newest last).
type Names = Arc<BTreeSet<String>>;

struct Cached {
    state: DirState,
    names: Names,
    /// Kept current by inotify; otherwise good while `state` holds.
    watched: Option<i32>,
}

/// What inotify said about a watched directory.
enum Change {
    /// A name came into the directory (`added`) or left it.
    Entry { wd: i32, name: String, added: bool },
    /// The directory itself went away (or moved): its watch is gone.
    Gone(i32),
    /// Events were lost.
    Overflow,
}

/// An inotify instance, read without blocking.
struct Inotify(OwnedFd);

impl Inotify {
    fn new() -> Option<Inotify> {
        // SAFETY: a plain system call; the descriptor it returns is owned from here on.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        (fd >= 0).then(|| Inotify(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn watch(&self, dir: &Path) -> Option<i32> {
        let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mask = libc::IN_CREATE
            | libc::IN_MOVED_TO
            | libc::IN_DELETE
            | libc::IN_MOVED_FROM
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF
            | libc::IN_ONLYDIR;
        // SAFETY: a valid descriptor and a NUL-terminated path that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.0.as_raw_fd(), path.as_ptr(), mask) };
        (wd >= 0).then_some(wd)
    }

    fn unwatch(&self, wd: i32) {
        // SAFETY: removing a watch of our own descriptor; a stale one is an error we ignore.
        unsafe { libc::inotify_rm_watch(self.0.as_raw_fd(), wd) };
    }

    /// Every event queued so far.
    fn drain(&self) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into a buffer we own, at most its length.
            let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else {
                return changes; // EAGAIN: nothing more queued
            };
            if n == 0 {
                return changes;
            }
            let mut at = 0;
            while at + 16 <= n {
                let word = |i: usize| {
                    [
                        buf[at + i],
                        buf[at + i + 1],
                        buf[at + i + 2],
                        buf[at + i + 3],
                    ]
                };
                let wd = i32::from_ne_bytes(word(0));
                let mask = u32::from_ne_bytes(word(4));
                let len = u32::from_ne_bytes(word(12)) as usize;
                let raw = &buf[(at + 16).min(n)..(at + 16 + len).min(n)];
                let name = raw.split(|&b| b == 0).next().unwrap_or_default();
                let name = String::from_utf8_lossy(name).into_owned();
                at += 16 + len;
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    changes.push(Change::Overflow);
                } else if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0
                {
                    changes.push(Change::Gone(wd));
                } else if mask & libc::IN_ISDIR != 0 {
                    continue;
                } else if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                    changes.push(Change::Entry {
                        wd,
                        name,
                        added: true,
                    });
                } else if mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
                    changes.push(Change::Entry {
                        wd,
                        name,
                        added: false,
                    });
                }
            }
        }
    }
}

#[derive(Default)]
struct Inner {
    dirs: HashMap<PathBuf, Cached>,
    watched: HashMap<i32, PathBuf>,
}

pub struct JournalCache {
    inner: Mutex<Inner>,
    inotify: Option<Inotify>,
    settled: Duration,
}

impl Default for JournalCache {
    fn default() -> Self {
        JournalCache {
            inner: Mutex::default(),
            inotify: Inotify::new(),
            settled: SETTLED,
        }
    }
}

impl JournalCache {
    /// A cache that never uses inotify, for tests of the fallback.
    #[cfg(test)]
    fn without_inotify(settled: Duration) -> JournalCache {
        JournalCache {
            inner: Mutex::default(),
            inotify: None,
            settled,
        }
    }

    /// Applies what inotify reported since the last call.
    fn apply_changes(&self, inner: &mut Inner) {
        let Some(inotify) = &self.inotify else {
            return;
        };
        let Inner { dirs, watched } = inner;
        for change in inotify.drain() {
            match change {
                Change::Overflow => dirs.clear(),
                Change::Gone(wd) => {
                    if let Some(dir) = watched.remove(&wd) {
                        dirs.remove(&dir);
                    }
                    inotify.unwatch(wd);
                }
                Change::Entry { wd, name, added } => {
                    if file_timestamp(&name).is_none() {
                        continue;
                    }
                    let Some(cached) = watched.get(&wd).and_then(|dir| dirs.get_mut(dir)) else {
                        continue;
                    };
                    let names = Arc::make_mut(&mut cached.names);
                    if added {
                        names.insert(name);
                    } else {
                        names.remove(&name);
                    }
                }
            }
        }
    }

    /// The journal file names of `dir`; `None` when there is no such directory.
    fn names(&self, dir: &Path) -> Option<Names> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.apply_changes(&mut inner);
        let Ok(meta) = std::fs::metadata(dir) else {
            inner.dirs.remove(dir);
            return None;
        };
        let state = DirState::of(&meta);
        if let Some(c) = inner.dirs.get(dir) {
            if c.watched.is_some() || c.state == state {
                return Some(c.names.clone());
            }
        }
        // The watch first: whatever changes from here on is queued, so the listing below
        // cannot miss it.
        let watched = self.inotify.as_ref().and_then(|i| i.watch(dir));
        let read_at = SystemTime::now();
        let names: BTreeSet<String> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| file_timestamp(n).is_some())
            .collect();
        let names = Arc::new(names);
        // ctime, not mtime: it moves with every change of the entries and of the times, and
        // nobody can set it back by hand.
        let changed = SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(meta.ctime()).unwrap_or(0),
                u32::try_from(meta.ctime_nsec()).unwrap_or(0),
            );
        let settled = read_at
            .duration_since(changed)
            .is_ok_and(|age| age >= self.settled);
        match watched {
            Some(wd) => {
                inner.watched.insert(wd, dir.to_path_buf());
            }
            None if !settled => {
                inner.dirs.remove(dir);
                return Some(names);
            }
            None => {}
        }
        inner.dirs.insert(
            dir.to_path_buf(),
            Cached {
                state,
                names: names.clone(),
                watched,
            },
        );
        Some(names)
    }

    /// Reads a module's journal names ahead of the first request that needs them.
    pub fn prime(&self, data: &DataDir, module: &str) {
        self.names(&data.events_dir(module));
    }

    /// The journal of one module, newest first: what `crate::journal::list` gives for
    /// `[module]`, faster.
    pub fn list(&self, data: &DataDir, module: &str, q: &Query) -> Listing {
        let dir = data.events_dir(module);
        let mut listing = Listing::default();
        let Some(names) = self.names(&dir) else {
            return listing;
        };
        let since = q.since.map(stamp_of);
        let slug = q.entity.as_deref().map(entity_slug);
        let limit = q.limit.unwrap_or(usize::MAX);
        for name in names.iter().rev() {
            if listing.entries.len() >= limit {
                break;
            }
            // Names sort by their time stamp first: the rest are older still.
            if since.as_deref().is_some_and(|s| &name[..19] < s) {
                break;
            }
            if slug.as_deref().is_some_and(|s| !name_has_slug(name, s)) {
                continue;
            }
            let path = dir.join(name);
            let entry = match std::fs::read(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => Err(e.to_string()),
                Ok(bytes) => {
                    serde_json::from_slice::<JournalEntry>(&bytes).map_err(|e| e.to_string())
                }
            };
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    listing.warnings.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            if q.entity.as_ref().is_some_and(|e| *e != entry.entity)
                || q.status.is_some_and(|s| s != entry.status)
                || q.since.is_some_and(|s| entry.timestamp < s)
            {
                continue;
            }
            listing.entries.push(Listed { entry, path });
        }
        listing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use kai_core::JournalStatus;

    fn entry(i: i64, entity: &str, status: JournalStatus) -> JournalEntry {
        JournalEntry {
            run_id: format!("r_{i:04}"),
            timestamp: Utc.with_ymd_and_hms(2026, 4, 4, 12, 0, 0).unwrap()
                + chrono::Duration::seconds(i / 3),
            module: "m".into(),
            trigger: "invoke".into(),
            delivery_id: None,
            entity: entity.into(),
            chat_id: None,
            status,
            summary: String::new(),
            duration_seconds: 0.0,
            attempt: 1,
            details: serde_json::Value::Null,
            error: None,
            stderr_tail: None,
            retry: false,
            question: None,
        }
    }

    fn write(data: &DataDir, e: &JournalEntry) {
        let events = data.events_dir("m");
        let mut n = 1;
        while events.join(e.file_name(n)).exists() {
            n += 1;
        }
        data.write_atomic(
            &events.join(e.file_name(n)),
            &serde_json::to_vec(e).unwrap(),
        )
        .unwrap();
    }

    fn ids(l: &Listing) -> Vec<String> {
        l.entries.iter().map(|e| e.entry.run_id.clone()).collect()
    }

    #[test]
    fn selects_what_the_journal_module_selects() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let entities = ["octo/repo#1", "octo/repo#12", "octo/repo@main", "daily"];
        for i in 0..120 {
            let status = if i % 7 == 0 {
                JournalStatus::Error
            } else {
                JournalStatus::Done
            };
            write(&data, &entry(i, entities[i as usize % 4], status));
        }
        let events = data.events_dir("m");
        std::fs::write(events.join("2026-04-04T12:00:05_daily_9.json"), "{").unwrap();
        std::fs::write(events.join("notes.txt"), "not a journal file").unwrap();
        let caches = [
            JournalCache::default(),
            JournalCache::without_inotify(Duration::ZERO),
        ];
        assert!(caches[0].inotify.is_some(), "inotify is there on Linux");
        let since = Utc.with_ymd_and_hms(2026, 4, 4, 12, 0, 20).unwrap();
        let mut queries = vec![Query::default()];
        for limit in [None, Some(1), Some(7), Some(500)] {
            for entity in [None, Some("octo/repo#1"), Some("daily"), Some("none")] {
                for status in [None, Some(JournalStatus::Error)] {
                    for since in [None, Some(since)] {
                        queries.push(Query {
                            entity: entity.map(str::to_owned),
                            status,
                            since,
                            limit,
                        });
                    }
                }
            }
        }
        for q in &queries {
            let slow = crate::journal::list(&data, &["m".to_owned()], q);
            for cache in &caches {
                for _ in 0..2 {
                    let fast = cache.list(&data, "m", q);
                    assert_eq!(ids(&fast), ids(&slow), "{q:?}");
                    assert_eq!(fast.warnings.len(), slow.warnings.len(), "{q:?}");
                }
            }
        }
    }

    #[test]
    fn every_change_is_seen_through_inotify() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let cache = JournalCache::default();
        let q = Query::default();
        let dir = data.events_dir("m");
        assert!(cache.list(&data, "m", &q).entries.is_empty());
        write(&data, &entry(1, "a", JournalStatus::Done));
        assert_eq!(ids(&cache.list(&data, "m", &q)), ["r_0001"]);
        assert!(cache.inner.lock().unwrap().dirs[&dir].watched.is_some());
        // Renamed in (as kai writes), created in place, renamed out, removed: each at once.
        write(&data, &entry(9, "b", JournalStatus::Done));
        assert_eq!(ids(&cache.list(&data, "m", &q)), ["r_0009", "r_0001"]);
        let by_hand = entry(30, "c", JournalStatus::Error);
        std::fs::write(
            dir.join(by_hand.file_name(1)),
            serde_json::to_vec(&by_hand).unwrap(),
        )
        .unwrap();
        assert_eq!(
            ids(&cache.list(&data, "m", &q)),
            ["r_0030", "r_0009", "r_0001"]
        );
        let newest = dir.join(by_hand.file_name(1));
        std::fs::rename(&newest, tmp.path().join("elsewhere.json")).unwrap();
        assert_eq!(ids(&cache.list(&data, "m", &q)), ["r_0009", "r_0001"]);
        let oldest = dir.join(entry(1, "a", JournalStatus::Done).file_name(1));
        std::fs::remove_file(oldest).unwrap();
        assert_eq!(ids(&cache.list(&data, "m", &q)), ["r_0009"]);
        // The directory goes and comes back.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(cache.list(&data, "m", &q).entries.is_empty());
        write(&data, &entry(40, "d", JournalStatus::Done));
        assert_eq!(ids(&cache.list(&data, "m", &q)), ["r_0040"]);
    }

    #[test]
    fn without_inotify_a_listing_is_kept_while_the_directory_is_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let q = Query::default();
        let dir = data.events_dir("m");
        write(&data, &entry(1, "a", JournalStatus::Done));
        // Just changed: used, not kept.
        let cache = JournalCache::without_inotify(SETTLED);
        assert_eq!(ids(&cache.list(&data, "m", &q)), ["r_0001"]);
        assert!(!cache.inner.lock().unwrap().dirs.contains_key(&dir));
        // Settled (here: at once): kept, and read again after each change.
        let cache = JournalCache::without_inotify(Duration::ZERO);
        assert_eq!(ids(&cache.list(&data, "m", &q)), ["r_0001"]);
        assert!(cache.inner.lock().unwrap().dirs.contains_key(&dir));
        // With no settling time, a change must come in a later clock tick than the listing;
        // that is what the second of settling time buys outside this test.
        let next_tick = || std::thread::sleep(Duration::from_millis(50));
        next_tick();
        write(&data, &entry(9, "b", JournalStatus::Done));
        assert_eq!(ids(&cache.list(&data, "m", &q)), ["r_0009", "r_0001"]);
        next_tick();
        std::fs::remove_file(dir.join(entry(9, "b", JournalStatus::Done).file_name(1))).unwrap();
        assert_eq!(ids(&cache.list(&data, "m", &q)), ["r_0001"]);
    }
}
