//! Writing beneath a directory without ever following a link.
//!
//! Restore runs as root over directories the cluster's owner (postgres) owns and may have
//! prepared: a link left at `PG_VERSION` or `base/1` would otherwise make root write, chmod or
//! chown whatever it points to. So everything below a root directory is reached from that
//! directory's descriptor one component at a time, each opened with `O_NOFOLLOW`: a link swapped
//! in between two steps is refused by the kernel, never followed. Something of the wrong type in
//! the way (a link or a file where a directory belongs, a link, FIFO or directory where a file
//! belongs) is removed and recreated, never used.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fstat(fd: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: fstat writes into the zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// The names of `rel` in order; `..`, absolute paths and the like are refused (a manifest path
/// never has them, and one that did must not climb out of the root).
fn names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("path {} leaves its directory", rel.display()),
            )),
        })
        .collect()
}

/// An open directory.
pub struct Dir {
    fd: OwnedFd,
}

/// What to do with a directory `descend` creates (give it to the cluster's owner).
pub type OnCreate<'a> = &'a dyn Fn(&Dir) -> io::Result<()>;

impl Dir {
    /// Opens a directory the operator named (links in its path are the operator's and followed).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let p = cstr(path.as_os_str())?;
        // SAFETY: open with a valid C string; the descriptor is owned below.
        let fd = check(unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        Ok(Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn raw(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// The entry `name` as it is (a link is reported as a link), or None when absent.
    pub fn lstat(&self, name: &OsStr) -> io::Result<Option<libc::stat>> {
        let n = cstr(name)?;
        // SAFETY: fstatat writes into the zeroed struct we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        match check(unsafe {
            libc::fstatat(self.raw(), n.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW)
        }) {
            Ok(_) => Ok(Some(st)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn child(&self, name: &OsStr) -> io::Result<Dir> {
        let n = cstr(name)?;
        // SAFETY: openat with a valid C string; the descriptor is owned below.
        let fd = check(unsafe {
            libc::openat(
                self.raw(),
                n.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })?;
        Ok(Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The directory `rel` below this one. With `create`, a missing directory is made (mode
    /// 0700, then `create` is called on it) and anything else in the way is removed first;
    /// without, a component that is not a directory (a link included) is an error.
    pub fn descend(&self, rel: &Path, create: Option<OnCreate>) -> io::Result<Dir> {
        let mut cur = self.child(OsStr::new("."))?;
        for name in names(rel)? {
            cur = match (cur.child(name), create) {
                (Ok(d), _) => d,
                (Err(e), Some(on_create)) => {
                    if e.kind() != io::ErrorKind::NotFound {
                        // ENOTDIR or ELOOP: a file or a link where a directory belongs.
                        cur.remove(name)?;
                    }
                    let n = cstr(name)?;
                    // SAFETY: mkdirat with a valid C string.
                    check(unsafe { libc::mkdirat(cur.raw(), n.as_ptr(), 0o700) })?;
                    let d = cur.child(name)?;
                    on_create(&d)?;
                    d
                }
                (Err(e), None) => return Err(e),
            };
        }
        Ok(cur)
    }

    /// Removes `name` whatever it is; a directory with everything under it, links not followed.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        let n = cstr(name)?;
        // SAFETY: unlinkat with a valid C string.
        let r = check(unsafe { libc::unlinkat(self.raw(), n.as_ptr(), 0) });
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                let sub = self.child(name)?;
                sub.clear()?;
                // SAFETY: unlinkat with a valid C string.
                check(unsafe { libc::unlinkat(self.raw(), n.as_ptr(), libc::AT_REMOVEDIR) })
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Removes everything in this directory, links not followed.
    fn clear(&self) -> io::Result<()> {
        for e in self.entries()? {
            self.remove(&e)?;
        }
        Ok(())
    }

    /// The names in this directory.
    pub fn entries(&self) -> io::Result<Vec<std::ffi::OsString>> {
        // read_dir through /proc/self/fd reads the directory this descriptor holds: the magic
        // link resolves to the open directory itself, whatever was renamed or linked since.
        let rd = std::fs::read_dir(format!("/proc/self/fd/{}", self.raw()))?;
        rd.map(|e| e.map(|e| e.file_name())).collect()
    }

    /// Opens the regular file `name` for reading and writing, created (mode 0600) if absent.
    /// Anything else at the name (a link, a directory, a FIFO) and a file with other names
    /// (a hard link to a file elsewhere) are removed and a new file made in their place.
    pub fn file(&self, name: &OsStr, truncate: bool) -> io::Result<File> {
        let n = cstr(name)?;
        let base = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
        let mut flags = base | libc::O_CREAT | if truncate { libc::O_TRUNC } else { 0 };
        for _ in 0..3 {
            // SAFETY: openat with a valid C string.
            let fd = unsafe { libc::openat(self.raw(), n.as_ptr(), flags, 0o600 as libc::c_uint) };
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ELOOP) | Some(libc::EISDIR) | Some(libc::ENXIO) => {
                        self.remove(name)?;
                        flags = base | libc::O_CREAT | libc::O_EXCL;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            // SAFETY: fd was just opened and is owned by the File.
            let f = unsafe { File::from_raw_fd(fd) };
            let st = fstat(fd)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_nlink <= 1 {
                // O_NONBLOCK only kept a FIFO from blocking the open; a regular file ignores it.
                // SAFETY: fcntl on our descriptor.
                check(unsafe { libc::fcntl(fd, libc::F_SETFL, 0) })?;
                return Ok(f);
            }
            drop(f);
            self.remove(name)?;
            flags = base | libc::O_CREAT | libc::O_EXCL;
        }
        Err(io::Error::other(
            "the path keeps changing under the restore (something else is writing there)",
        ))
    }

    /// Opens the regular file `name` for reading, with the status of what was opened. `follow`
    /// says whether a link as the last name is followed (the directories above never are).
    pub fn open_read(&self, name: &OsStr, follow: bool) -> io::Result<(File, libc::stat)> {
        let n = cstr(name)?;
        let flags = libc::O_RDONLY
            | libc::O_CLOEXEC
            | libc::O_NONBLOCK
            | if follow { 0 } else { libc::O_NOFOLLOW };
        // SAFETY: openat with a valid C string; the descriptor is owned by the File.
        let fd = check(unsafe { libc::openat(self.raw(), n.as_ptr(), flags) })?;
        let f = unsafe { File::from_raw_fd(fd) };
        let st = fstat(fd)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        // SAFETY: fcntl on our descriptor.
        check(unsafe { libc::fcntl(fd, libc::F_SETFL, 0) })?;
        Ok((f, st))
    }

    /// What the link `name` points to, or None when it is absent or not a link.
    pub fn read_link(&self, name: &OsStr) -> io::Result<Option<std::path::PathBuf>> {
        match self.lstat(name)? {
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {}
            _ => return Ok(None),
        }
        let n = cstr(name)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: readlinkat into a buffer of the length we pass.
        let len =
            unsafe { libc::readlinkat(self.raw(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(len as usize);
        Ok(Some(std::path::PathBuf::from(
            std::ffi::OsString::from_vec(buf),
        )))
    }

    /// Makes `name` a link to `target`, replacing whatever is there.
    pub fn symlink(&self, target: &Path, name: &OsStr) -> io::Result<()> {
        if self.lstat(name)?.is_some() {
            self.remove(name)?;
        }
        let (t, n) = (cstr(target.as_os_str())?, cstr(name)?);
        // SAFETY: symlinkat with valid C strings.
        check(unsafe { libc::symlinkat(t.as_ptr(), self.raw(), n.as_ptr()) }).map(|_| ())
    }

    /// Gives the entry `name` itself (a link, not its target) to `uid`:`gid`.
    pub fn lchown(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        let n = cstr(name)?;
        // SAFETY: fchownat with a valid C string.
        check(unsafe {
            libc::fchownat(self.raw(), n.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW)
        })
        .map(|_| ())
    }

    /// Sets this directory's mode.
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        // SAFETY: fchmod on our descriptor.
        check(unsafe { libc::fchmod(self.raw(), mode as libc::mode_t) }).map(|_| ())
    }

    /// Gives this directory to `uid`:`gid`.
    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::fchown(&self.fd, Some(uid), Some(gid))
    }

    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: fsync on our descriptor.
        check(unsafe { libc::fsync(self.raw()) }).map(|_| ())
    }
}

use std::os::unix::ffi::OsStringExt;

/// Splits a relative path into its directory and its last name.
pub fn split(rel: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no name"))?;
    Ok((rel.parent().unwrap_or(Path::new("")), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_in_the_way_are_replaced_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let (root, outside) = (t.path().join("root"), t.path().join("outside"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "keep").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("base")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("PG_VERSION")).unwrap();
        let d = Dir::open(&root).unwrap();
        // Without create, a link where a directory belongs is refused.
        assert!(d.descend(Path::new("base"), None).is_err());
        let sub = d.descend(Path::new("base/1"), Some(&|_| Ok(()))).unwrap();
        use std::io::Write;
        sub.file(OsStr::new("secret"), true)
            .unwrap()
            .write_all(b"new")
            .unwrap();
        d.file(OsStr::new("PG_VERSION"), true)
            .unwrap()
            .write_all(b"15\n")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "keep"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        assert!(root.join("base").is_dir() && !root.join("base").is_symlink());
        assert_eq!(
            std::fs::read_to_string(root.join("PG_VERSION")).unwrap(),
            "15\n"
        );
        // A hard link to a file elsewhere is replaced too.
        std::fs::hard_link(outside.join("secret"), root.join("hl")).unwrap();
        d.file(OsStr::new("hl"), false)
            .unwrap()
            .write_all(b"x")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "keep"
        );
        assert!(d.descend(Path::new("../x"), None).is_err());
    }
}
