//! The fallback walk for platforms without `openat` (Windows): paths, not descriptors. Each
//! component is checked with `symlink_metadata` (a symlink, junction or other reparse point that
//! reports as a link is refused) and every directory or file reached must canonicalize to
//! exactly the path built from the canonical root and the checked components, so a link the
//! first check missed still cannot lead out.
//!
//! Weaker than the descriptor walk: between the check and the use, another process could swap a
//! directory for a link (a TOCTOU window), and on Windows hard links are not detected. It is
//! compiled and tested on every platform; Unix builds use the `openat` walk.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{Backend, Fail, Kind, RawEntry, WriteMode};

pub struct Paths {
    root: PathBuf,
}

impl Paths {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let root = std::fs::canonicalize(root)?;
        if !std::fs::metadata(&root)?.is_dir() {
            return Err(std::io::Error::new(
                ErrorKind::NotADirectory,
                "the jail root is not a directory",
            ));
        }
        Ok(Self { root })
    }
}

fn fail(e: std::io::Error) -> Fail {
    match e.kind() {
        ErrorKind::NotFound => Fail::NotFound,
        ErrorKind::NotADirectory => Fail::NotDir,
        ErrorKind::AlreadyExists => Fail::Exists,
        ErrorKind::IsADirectory => Fail::NotFile,
        _ => Fail::Io(e),
    }
}

fn kind_of(file_type: std::fs::FileType) -> Kind {
    if file_type.is_symlink() {
        Kind::Symlink
    } else if file_type.is_dir() {
        Kind::Dir
    } else if file_type.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

impl Paths {
    /// `path` exists, is not a link, and is where the checked components say.
    fn verify(&self, path: &Path, want: Kind) -> Result<(), Fail> {
        let kind = kind_of(std::fs::symlink_metadata(path).map_err(fail)?.file_type());
        match (kind, want) {
            (Kind::Symlink, _) => return Err(Fail::Symlink),
            (k, w) if k == w => {}
            (_, Kind::Dir) => return Err(Fail::NotDir),
            _ => return Err(Fail::NotFile),
        }
        if std::fs::canonicalize(path).map_err(fail)? != path {
            return Err(Fail::Symlink);
        }
        Ok(())
    }
}

/// A file with several hard links may be a link to a file outside the jail. Unix only: Windows
/// has no stable way to count links (Windows hard links are not refused there).
fn single_link(file: &File) -> Result<(), Fail> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if file.metadata().map_err(fail)?.nlink() > 1 {
            return Err(Fail::HardLinked);
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

impl Backend for Paths {
    type Dir = PathBuf;

    fn root(&self) -> Result<PathBuf, Fail> {
        self.verify(&self.root, Kind::Dir)?;
        Ok(self.root.clone())
    }

    fn subdir(&self, dir: &PathBuf, name: &str) -> Result<PathBuf, Fail> {
        let path = dir.join(name);
        self.verify(&path, Kind::Dir)?;
        Ok(path)
    }

    fn mkdir(&self, dir: &PathBuf, name: &str) -> Result<(), Fail> {
        std::fs::create_dir(dir.join(name)).map_err(fail)
    }

    fn entries(&self, dir: &PathBuf) -> Result<Vec<RawEntry>, Fail> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(fail)? {
            let entry = entry.map_err(fail)?;
            let (kind, size) = match std::fs::symlink_metadata(entry.path()) {
                Ok(m) => (kind_of(m.file_type()), m.len()),
                Err(_) => (Kind::Other, 0),
            };
            out.push(RawEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind,
                size,
            });
        }
        Ok(out)
    }

    fn open_read(&self, dir: &PathBuf, name: &str) -> Result<File, Fail> {
        let path = dir.join(name);
        self.verify(&path, Kind::File)?;
        let file = File::open(&path).map_err(fail)?;
        single_link(&file)?;
        Ok(file)
    }

    fn open_write(&self, dir: &PathBuf, name: &str, mode: WriteMode) -> Result<File, Fail> {
        let path = dir.join(name);
        match self.verify(&path, Kind::File) {
            Ok(()) if mode == WriteMode::CreateNew => return Err(Fail::Exists),
            Ok(()) | Err(Fail::NotFound) => {}
            Err(e) => return Err(e),
        }
        let mut options = OpenOptions::new();
        match mode {
            WriteMode::Overwrite => options.write(true).create(true),
            WriteMode::Append => options.append(true).create(true),
            WriteMode::CreateNew => options.write(true).create_new(true),
        };
        let file = options.open(&path).map_err(fail)?;
        self.verify(&path, Kind::File)?;
        single_link(&file)?;
        Ok(file)
    }
}
