//! Atomic file writes: data goes to `NAME.tmp` beside the target, is synced to disk, then
//! renamed over it, so a reader (or a resumed job) sees the old file or the whole new one,
//! never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `path` with `.tmp` appended to its file name (`a/b.json` → `a/b.json.tmp`).
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically. The error names the file the step failed on.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    replace_with(path, |tmp| {
        let mut file = std::fs::File::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })
}

/// Runs `write` on the temporary path, syncs what it wrote and renames it over `path`.
/// For writers that take a path (safetensors, Parquet, image encoders). On failure the
/// temporary file is removed and `path` is untouched.
pub fn replace_with(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), AtomicWriteError> {
    let tmp = temporary_path(path);
    if let Err(source) = write(&tmp).and_then(|()| std::fs::File::open(&tmp)?.sync_all()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(AtomicWriteError {
            path: path.to_path_buf(),
            temporary: Some(tmp),
            source,
        });
    }
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        AtomicWriteError {
            path: path.to_path_buf(),
            temporary: None,
            source,
        }
    })
}

/// An atomic write that failed, naming the file the caller asked for (and the temporary
/// file beside it when that is where it failed).
#[derive(Debug)]
pub struct AtomicWriteError {
    pub path: PathBuf,
    /// The temporary file the data was being written to, when the failure happened there.
    pub temporary: Option<PathBuf>,
    pub source: std::io::Error,
}

impl std::fmt::Display for AtomicWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write {}: {}", self.path.display(), self.source)?;
        if let Some(tmp) = &self.temporary {
            write!(f, " (while writing its temporary file {})", tmp.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for AtomicWriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<AtomicWriteError> for std::io::Error {
    fn from(e: AtomicWriteError) -> Self {
        std::io::Error::new(e.source.kind(), e.to_string())
    }
}
