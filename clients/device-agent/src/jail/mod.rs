//! The jailed filesystem: list, read, write and search under one root folder.
//!
//! A path is checked first (`path::components`: relative, no `..`, no NUL or look-alike
//! characters), then walked from the root one component at a time by a [`Backend`]: on Unix
//! with `openat(…, O_NOFOLLOW)` from the root's descriptor ([`unix::Openat`]); elsewhere by
//! checked paths ([`portable::Paths`]). Symlinks are refused wherever they are (they are listed,
//! never followed), so is a file with several hard links (it may be a link to a file outside).
//! Sizes are capped and the jail can be read-only.

pub mod path;
pub mod portable;
#[cfg(unix)]
pub mod unix;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

/// The walk of the platform: descriptors on Unix, checked paths elsewhere.
#[cfg(unix)]
pub type Native = unix::Openat;
#[cfg(not(unix))]
pub type Native = portable::Paths;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    Overwrite,
    Append,
    CreateNew,
}

/// Why a backend step failed, before the jail adds the path the caller gave.
#[derive(Debug)]
pub enum Fail {
    Symlink,
    NotFound,
    NotDir,
    NotFile,
    HardLinked,
    Exists,
    Io(std::io::Error),
}

pub struct RawEntry {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
}

/// One step of a walk. A `Dir` is a verified directory of the jail (a descriptor, or a checked
/// path); names given to it are single checked components.
pub trait Backend: Send + Sync + 'static {
    type Dir;
    fn root(&self) -> Result<Self::Dir, Fail>;
    /// The sub-directory `name` of `dir`; a symlink is refused, never followed.
    fn subdir(&self, dir: &Self::Dir, name: &str) -> Result<Self::Dir, Fail>;
    fn mkdir(&self, dir: &Self::Dir, name: &str) -> Result<(), Fail>;
    /// The entries of `dir` (not `.` and `..`), links not followed.
    fn entries(&self, dir: &Self::Dir) -> Result<Vec<RawEntry>, Fail>;
    /// A regular file of `dir` with one link, opened for reading.
    fn open_read(&self, dir: &Self::Dir, name: &str) -> Result<File, Fail>;
    /// A regular file of `dir` with one link (created if missing), opened for writing without
    /// truncating it.
    fn open_write(&self, dir: &Self::Dir, name: &str, mode: WriteMode) -> Result<File, Fail>;
}

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("{0:?}: refused: symbolic links are not followed in the jail")]
    Symlink(String),
    #[error("{0:?}: not found")]
    NotFound(String),
    #[error("{0:?}: not a directory")]
    NotADirectory(String),
    #[error("{0:?}: not a regular file")]
    NotAFile(String),
    #[error("{0:?}: refused: the file has several hard links")]
    HardLinked(String),
    #[error("{0:?}: already exists")]
    Exists(String),
    #[error("the jail is read-only")]
    ReadOnly,
    #[error("{what} is over the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{path:?}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl JailError {
    fn at(path: &str, fail: Fail) -> Self {
        let path = path.to_string();
        match fail {
            Fail::Symlink => Self::Symlink(path),
            Fail::NotFound => Self::NotFound(path),
            Fail::NotDir => Self::NotADirectory(path),
            Fail::NotFile => Self::NotAFile(path),
            Fail::HardLinked => Self::HardLinked(path),
            Fail::Exists => Self::Exists(path),
            Fail::Io(source) => Self::Io { path, source },
        }
    }

    fn io(path: &str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_string(),
            source,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes a single read returns at most.
    pub max_read_bytes: u64,
    /// Bytes a single write may carry, and the size a written file may reach.
    pub max_write_bytes: u64,
    pub max_list_entries: usize,
    pub max_search_results: usize,
    /// Entries a search looks at before it stops.
    pub max_search_visits: usize,
    pub max_search_depth: usize,
    /// Files larger than this are not searched for content.
    pub max_search_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_read_bytes: 256 * 1024,
            max_write_bytes: 1024 * 1024,
            max_list_entries: 1000,
            max_search_results: 200,
            max_search_visits: 20_000,
            max_search_depth: 32,
            max_search_file_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub path: String,
    pub entries: Vec<Entry>,
    pub truncated: bool,
}

#[derive(Debug)]
pub struct ReadOut {
    pub bytes: Vec<u8>,
    pub size: u64,
    pub offset: u64,
    pub truncated: bool,
}

#[derive(Debug, Serialize)]
pub struct WriteOut {
    pub path: String,
    pub bytes_written: u64,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct SearchHit {
    pub path: String,
    pub kind: Kind,
    /// For a content match: the 1-based line and its text (cut at 200 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SearchOut {
    pub hits: Vec<SearchHit>,
    pub truncated: bool,
}

struct Inner<B> {
    backend: B,
    root_path: PathBuf,
    read_only: bool,
    limits: Limits,
}

/// A cheap clonable handle on the jail.
pub struct Jail<B: Backend = Native> {
    inner: Arc<Inner<B>>,
}

impl<B: Backend> Clone for Jail<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl Jail<Native> {
    /// Opens the jail at `root` (which must be a directory).
    pub fn open(root: &Path, read_only: bool, limits: Limits) -> std::io::Result<Self> {
        Ok(Self::with_backend(
            Native::open(root)?,
            root,
            read_only,
            limits,
        ))
    }
}

impl<B: Backend> Jail<B> {
    pub fn with_backend(backend: B, root: &Path, read_only: bool, limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                root_path: root.to_path_buf(),
                read_only,
                limits,
            }),
        }
    }

    pub fn root_path(&self) -> &Path {
        &self.inner.root_path
    }

    pub fn read_only(&self) -> bool {
        self.inner.read_only
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn checked<'a>(&self, path: &'a str) -> Result<Vec<&'a str>, JailError> {
        path::components(path).map_err(|reason| JailError::InvalidPath {
            path: path.to_string(),
            reason,
        })
    }

    /// Walks `components` from the root, creating missing directories when `create`.
    fn walk(&self, display: &str, components: &[&str], create: bool) -> Result<B::Dir, JailError> {
        let b = &self.inner.backend;
        let mut dir = b.root().map_err(|f| JailError::at(display, f))?;
        for name in components {
            dir = match b.subdir(&dir, name) {
                Err(Fail::NotFound) if create => {
                    match b.mkdir(&dir, name) {
                        Ok(()) | Err(Fail::Exists) => {}
                        Err(f) => return Err(JailError::at(display, f)),
                    }
                    b.subdir(&dir, name)
                }
                other => other,
            }
            .map_err(|f| JailError::at(display, f))?;
        }
        Ok(dir)
    }

    /// The directory holding the last component, and that component.
    fn parent<'a>(
        &self,
        display: &str,
        components: &[&'a str],
        create: bool,
    ) -> Result<(B::Dir, &'a str), JailError> {
        let Some((name, parents)) = components.split_last() else {
            return Err(JailError::NotAFile(display.to_string()));
        };
        Ok((self.walk(display, parents, create)?, name))
    }

    pub fn list(&self, path: &str) -> Result<Listing, JailError> {
        let components = self.checked(path)?;
        let dir = self.walk(path, &components, false)?;
        let mut raw = self
            .inner
            .backend
            .entries(&dir)
            .map_err(|f| JailError::at(path, f))?;
        raw.sort_by(|a, b| a.name.cmp(&b.name));
        let max = self.inner.limits.max_list_entries;
        let truncated = raw.len() > max;
        raw.truncate(max);
        Ok(Listing {
            path: components.join("/"),
            entries: raw
                .into_iter()
                .map(|e| Entry {
                    name: e.name,
                    kind: e.kind,
                    size: e.size,
                })
                .collect(),
            truncated,
        })
    }

    /// Up to `max_bytes` (capped by the limit) from `offset`.
    pub fn read(
        &self,
        path: &str,
        offset: u64,
        max_bytes: Option<u64>,
    ) -> Result<ReadOut, JailError> {
        let components = self.checked(path)?;
        let (dir, name) = self.parent(path, &components, false)?;
        let mut file = self
            .inner
            .backend
            .open_read(&dir, name)
            .map_err(|f| JailError::at(path, f))?;
        let size = file.metadata().map_err(|e| JailError::io(path, e))?.len();
        let limit = max_bytes
            .unwrap_or(self.inner.limits.max_read_bytes)
            .min(self.inner.limits.max_read_bytes);
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| JailError::io(path, e))?;
        let mut bytes = Vec::new();
        file.take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| JailError::io(path, e))?;
        Ok(ReadOut {
            truncated: offset.saturating_add(bytes.len() as u64) < size,
            bytes,
            size,
            offset,
        })
    }

    pub fn write(
        &self,
        path: &str,
        content: &[u8],
        mode: WriteMode,
        create_dirs: bool,
    ) -> Result<WriteOut, JailError> {
        if self.inner.read_only {
            return Err(JailError::ReadOnly);
        }
        let limit = self.inner.limits.max_write_bytes;
        if content.len() as u64 > limit {
            return Err(JailError::TooLarge {
                what: "the content".into(),
                limit,
            });
        }
        let components = self.checked(path)?;
        let (dir, name) = self.parent(path, &components, create_dirs)?;
        let mut file = self
            .inner
            .backend
            .open_write(&dir, name, mode)
            .map_err(|f| JailError::at(path, f))?;
        let before = file.metadata().map_err(|e| JailError::io(path, e))?.len();
        if mode == WriteMode::Append && before + content.len() as u64 > limit {
            return Err(JailError::TooLarge {
                what: "the file after appending".into(),
                limit,
            });
        }
        if mode == WriteMode::Overwrite {
            file.set_len(0).map_err(|e| JailError::io(path, e))?;
        }
        file.write_all(content)
            .and_then(|()| file.flush())
            .map_err(|e| JailError::io(path, e))?;
        let size = file.metadata().map_err(|e| JailError::io(path, e))?.len();
        Ok(WriteOut {
            path: components.join("/"),
            bytes_written: content.len() as u64,
            size,
        })
    }

    /// Entries under `path` whose name contains `query` (case-insensitive), and with `content`
    /// lines of regular files that contain it. Links are not followed.
    pub fn search(&self, path: &str, query: &str, content: bool) -> Result<SearchOut, JailError> {
        if query.is_empty() {
            return Err(JailError::InvalidPath {
                path: path.to_string(),
                reason: "the search query is empty".into(),
            });
        }
        let components = self.checked(path)?;
        let dir = self.walk(path, &components, false)?;
        let mut state = Search {
            needle: query.to_lowercase(),
            content,
            hits: Vec::new(),
            visits: 0,
            truncated: false,
        };
        self.search_dir(&mut state, &dir, &components.join("/"), 0);
        Ok(SearchOut {
            hits: state.hits,
            truncated: state.truncated,
        })
    }

    fn search_dir(&self, s: &mut Search, dir: &B::Dir, prefix: &str, depth: usize) {
        let limits = &self.inner.limits;
        let b = &self.inner.backend;
        let Ok(mut entries) = b.entries(dir) else {
            return;
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in entries {
            if s.hits.len() >= limits.max_search_results || s.visits >= limits.max_search_visits {
                s.truncated = true;
                return;
            }
            s.visits += 1;
            let rel = if prefix.is_empty() {
                entry.name.clone()
            } else {
                format!("{prefix}/{}", entry.name)
            };
            // A name the jail would refuse is neither reported nor entered.
            if path::components(&entry.name).map(|c| c.len()) != Ok(1) {
                continue;
            }
            if entry.name.to_lowercase().contains(&s.needle) {
                s.hits.push(SearchHit {
                    path: rel.clone(),
                    kind: entry.kind,
                    line: None,
                    text: None,
                });
            }
            match entry.kind {
                Kind::Dir if depth + 1 < limits.max_search_depth => {
                    if let Ok(sub) = b.subdir(dir, &entry.name) {
                        self.search_dir(s, &sub, &rel, depth + 1);
                    }
                }
                Kind::File if s.content && entry.size <= limits.max_search_file_bytes => {
                    self.search_file(s, dir, &entry.name, &rel);
                }
                _ => {}
            }
        }
    }

    fn search_file(&self, s: &mut Search, dir: &B::Dir, name: &str, rel: &str) {
        let limits = &self.inner.limits;
        let Ok(file) = self.inner.backend.open_read(dir, name) else {
            return;
        };
        let mut bytes = Vec::new();
        if file
            .take(limits.max_search_file_bytes)
            .read_to_end(&mut bytes)
            .is_err()
            || bytes.contains(&0)
        {
            return;
        }
        let text = String::from_utf8_lossy(&bytes);
        for (i, line) in text.lines().enumerate() {
            if s.hits.len() >= limits.max_search_results {
                s.truncated = true;
                return;
            }
            if line.to_lowercase().contains(&s.needle) {
                s.hits.push(SearchHit {
                    path: rel.to_string(),
                    kind: Kind::File,
                    line: Some(i as u64 + 1),
                    text: Some(line.chars().take(200).collect()),
                });
            }
        }
    }
}

struct Search {
    needle: String,
    content: bool,
    hits: Vec<SearchHit>,
    visits: usize,
    truncated: bool,
}
