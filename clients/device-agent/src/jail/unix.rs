//! The Unix walk: every component is opened with `openat(dir_fd, name, O_NOFOLLOW | …)` from
//! the root's descriptor, one at a time, so no symlink is ever followed, no `..` is ever
//! interpreted (the names were checked to be plain), and a directory renamed or replaced by a
//! symlink mid-walk cannot redirect it: each step holds the descriptor of the directory it
//! already verified.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, openat, statat};
use rustix::io::Errno;

use super::{Backend, Fail, Kind, RawEntry, WriteMode};

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
/// A FIFO or device must not block or become our controlling terminal before its type is seen.
const FILE_FLAGS: OFlags = OFlags::NOFOLLOW
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

pub struct Openat {
    root: OwnedFd,
}

impl Openat {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let root = openat(rustix::fs::CWD, root, DIR_FLAGS, Mode::empty())?;
        Ok(Self { root })
    }
}

fn fail(e: Errno) -> Fail {
    match e {
        // O_NOFOLLOW on a symlink: ELOOP (Linux, macOS), EMLINK (FreeBSD), EFTYPE (NetBSD).
        Errno::LOOP | Errno::MLINK => Fail::Symlink,
        Errno::NOENT => Fail::NotFound,
        Errno::NOTDIR => Fail::NotDir,
        Errno::EXIST => Fail::Exists,
        Errno::ISDIR | Errno::NXIO => Fail::NotFile,
        e => Fail::Io(e.into()),
    }
}

fn kind_of(file_type: FileType) -> Kind {
    match file_type {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    }
}

fn stat_kind(stat: &rustix::fs::Stat) -> Kind {
    kind_of(FileType::from_raw_mode(stat.st_mode))
}

impl Openat {
    /// The entry's type before opening it, without following it.
    fn lstat(&self, dir: &OwnedFd, name: &str) -> Result<rustix::fs::Stat, Fail> {
        statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(fail)
    }

    /// Opens `name` in `dir` as a regular file and checks it is the same single-linked file the
    /// lstat saw (a hard link to a file outside the jail is refused).
    fn open_file(
        &self,
        dir: &OwnedFd,
        name: &str,
        flags: OFlags,
        mode: Mode,
    ) -> Result<File, Fail> {
        match self.lstat(dir, name) {
            Ok(st) => match stat_kind(&st) {
                Kind::File => {}
                Kind::Symlink => return Err(Fail::Symlink),
                _ => return Err(Fail::NotFile),
            },
            Err(Fail::NotFound) if flags.contains(OFlags::CREATE) => {}
            Err(e) => return Err(e),
        }
        let fd = openat(dir, name, flags | FILE_FLAGS, mode).map_err(fail)?;
        let st = rustix::fs::fstat(&fd).map_err(fail)?;
        if stat_kind(&st) != Kind::File {
            return Err(Fail::NotFile);
        }
        if st.st_nlink > 1 {
            return Err(Fail::HardLinked);
        }
        // Back to blocking I/O for a regular file (O_NONBLOCK has no effect on one anyway).
        Ok(File::from(fd))
    }
}

impl Backend for Openat {
    type Dir = OwnedFd;

    fn root(&self) -> Result<OwnedFd, Fail> {
        openat(&self.root, ".", DIR_FLAGS, Mode::empty()).map_err(fail)
    }

    fn subdir(&self, dir: &OwnedFd, name: &str) -> Result<OwnedFd, Fail> {
        openat(dir, name, DIR_FLAGS, Mode::empty()).map_err(|e| match fail(e) {
            // O_DIRECTORY | O_NOFOLLOW on a symlink may say ENOTDIR: say what it is.
            Fail::NotDir
                if matches!(
                    self.lstat(dir, name).map(|s| stat_kind(&s)),
                    Ok(Kind::Symlink)
                ) =>
            {
                Fail::Symlink
            }
            other => other,
        })
    }

    fn mkdir(&self, dir: &OwnedFd, name: &str) -> Result<(), Fail> {
        rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)).map_err(fail)
    }

    fn entries(&self, dir: &OwnedFd) -> Result<Vec<RawEntry>, Fail> {
        let listing = Dir::read_from(dir.as_fd()).map_err(fail)?;
        let mut out = Vec::new();
        for entry in listing {
            let entry = entry.map_err(fail)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            // A name that is not UTF-8 cannot be named back through the jail: listed, marked.
            let (kind, size) = match statat(dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => (stat_kind(&st), u64::try_from(st.st_size).unwrap_or(0)),
                Err(_) => (kind_of(entry.file_type()), 0),
            };
            out.push(RawEntry { name, kind, size });
        }
        Ok(out)
    }

    fn open_read(&self, dir: &OwnedFd, name: &str) -> Result<File, Fail> {
        self.open_file(dir, name, OFlags::RDONLY, Mode::empty())
    }

    fn open_write(&self, dir: &OwnedFd, name: &str, mode: WriteMode) -> Result<File, Fail> {
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | match mode {
                WriteMode::Overwrite => OFlags::empty(),
                WriteMode::Append => OFlags::APPEND,
                WriteMode::CreateNew => OFlags::EXCL,
            };
        // No O_TRUNC: the file is checked (regular, one link) before anything is changed.
        self.open_file(dir, name, flags, Mode::from_raw_mode(0o644))
    }
}
