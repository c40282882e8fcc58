//! `$KAI_DATA_DIR`: where everything kai keeps lives, and how it is written.
//!
//! ```text
//! kai.toml            optional settings
//! kai.db              the run ledger (SQLite)
//! modules/<name>/     module.yaml (user modules), state.json, events/, pending/
//! owners/             one lock file per running kai process (crash detection)
//! tmp/                temporary files on their way to an atomic rename
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens the data directory, creating it (owner-only) and its fixed parts on first use.
    pub fn open(root: &Path) -> io::Result<DataDir> {
        let dir = DataDir {
            root: root.to_path_buf(),
        };
        create_private_dir(root)?;
        for sub in ["modules", "owners", "tmp"] {
            create_private_dir(&root.join(sub))?;
        }
        Ok(dir)
    }

    /// The data directory without creating anything: for commands that only read.
    pub fn at(root: &Path) -> DataDir {
        DataDir {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("modules")
    }

    pub fn module_dir(&self, module: &str) -> PathBuf {
        self.modules_dir().join(module)
    }

    pub fn events_dir(&self, module: &str) -> PathBuf {
        self.module_dir(module).join("events")
    }

    pub fn pending_dir(&self, module: &str) -> PathBuf {
        self.module_dir(module).join("pending")
    }

    pub fn state_file(&self, module: &str) -> PathBuf {
        self.module_dir(module).join("state.json")
    }

    pub fn ledger_file(&self) -> PathBuf {
        self.root.join("kai.db")
    }

    pub fn owners_dir(&self) -> PathBuf {
        self.root.join("owners")
    }

    pub fn config_file(&self) -> PathBuf {
        self.root.join("kai.toml")
    }

    /// Writes `bytes` to `path` atomically: a temporary file in `tmp/`, fsync, rename, fsync of
    /// the directory. A reader sees the old file or the new one, never a part; a crash leaves
    /// at most a stray file in `tmp/`, which the next start removes.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        write_atomic_via(&self.root.join("tmp"), path, bytes, 0o644)
    }

    /// Removes temporary files that kai processes no longer alive left behind (a temporary
    /// file's name starts with the writer's process id).
    pub fn clean_tmp(&self) -> io::Result<()> {
        for entry in fs::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid: i32 = name
                .split('-')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            // SAFETY: kill with signal 0 only checks whether the process exists.
            let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
            if !alive {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// Creates a directory readable by its owner only, if it does not exist.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Atomic write through a temporary file in `tmp_dir`, which must be on the same file system.
pub fn write_atomic_via(tmp_dir: &Path, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no directory"))?;
    fs::create_dir_all(dir)?;
    let tmp = tmp_dir.join(format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Atomic write for a file outside the data directory (the temporary file sits beside it).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    write_atomic_via(dir, path, bytes, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let file = data.state_file("m");
        data.write_atomic(&file, b"{\"a\":1}").unwrap();
        data.write_atomic(&file, b"{\"a\":2}").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "{\"a\":2}");
        assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
    }
}
