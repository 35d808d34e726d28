//! A fake container's filesystem: an in-memory, writable tree seeded from its image's
//! scripted files ([`ImageBehaviour::file`](super::ImageBehaviour::file)), with the
//! container's bind mounts ([`ContainerConfig::mounts`](crate::ContainerConfig)) passed
//! through to the host. A path at or under a mount's `container_path` reads and writes the
//! host file or directory at `host_path`; a read-only mount refuses writes with
//! [`FsError::ReadOnly`] (`EROFS`).
//!
//! The tree is built the first time anyone looks at the container's files (an exec, or
//! [`FakeRuntime::read_file`](super::FakeRuntime::read_file)), so a container nobody looks
//! into costs nothing.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::types::Mount;

/// What a file operation in a fake container can fail with. The messages are the C
/// library's `strerror` texts, which the fake's commands print after the path, as busybox
/// does (`cat: can't open '/x': No such file or directory`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// `ENOENT`: the path, or one of its parents, does not exist.
    #[error("No such file or directory")]
    NotFound,
    /// `ENOTDIR`: a parent of the path is a file.
    #[error("Not a directory")]
    NotADirectory,
    /// `EISDIR`: a file operation on a directory.
    #[error("Is a directory")]
    IsADirectory,
    /// `EEXIST`: creating what exists.
    #[error("File exists")]
    AlreadyExists,
    /// `ENOTEMPTY`: removing a directory that has entries, without recursion.
    #[error("Directory not empty")]
    NotEmpty,
    /// `EROFS`: writing under a read-only mount.
    #[error("Read-only file system")]
    ReadOnly,
    /// `EBUSY`: removing a mount point.
    #[error("Resource busy")]
    Busy,
    /// `EACCES` on the host side of a mount.
    #[error("Permission denied")]
    PermissionDenied,
    /// Any other host error, with its text.
    #[error("{0}")]
    Io(String),
}

impl From<io::Error> for FsError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(2) => return FsError::NotFound,
            Some(13) => return FsError::PermissionDenied,
            Some(16) => return FsError::Busy,
            Some(17) => return FsError::AlreadyExists,
            Some(20) => return FsError::NotADirectory,
            Some(21) => return FsError::IsADirectory,
            Some(30) => return FsError::ReadOnly,
            Some(39) => return FsError::NotEmpty,
            _ => {}
        }
        match e.kind() {
            io::ErrorKind::NotFound => FsError::NotFound,
            io::ErrorKind::AlreadyExists => FsError::AlreadyExists,
            io::ErrorKind::PermissionDenied => FsError::PermissionDenied,
            _ => FsError::Io(e.to_string()),
        }
    }
}

/// Whether a path is a file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
}

/// What `stat` says about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// File or directory.
    pub kind: FileKind,
    /// Permission bits (`0o644`, `0o755`, ...).
    pub mode: u32,
    /// Size in bytes (4096 for a directory, as `ls -l` shows).
    pub size: u64,
}

impl FileInfo {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }
}

/// A file an image ships, as scripted with [`ImageBehaviour::file`](super::ImageBehaviour::file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// The contents.
    pub contents: Bytes,
    /// Permission bits.
    pub mode: u32,
}

#[derive(Debug, Clone)]
enum Node {
    Dir { mode: u32 },
    File { data: Bytes, mode: u32 },
}

/// Where a path lives.
enum Location {
    Memory(String),
    Host { path: PathBuf, readonly: bool },
}

/// One container's files. Cheap to clone: clones are the same filesystem, so what a
/// handler writes, the next exec reads.
///
/// Paths are absolute, or relative to `/`; `.` and `..` are resolved first (there are no
/// symbolic links).
#[derive(Debug, Clone)]
pub struct FileView {
    inner: Arc<ViewInner>,
}

#[derive(Debug)]
struct ViewInner {
    tree: Mutex<BTreeMap<String, Node>>,
    /// Normalised container paths, longest first.
    mounts: Vec<Mount>,
}

const DEFAULT_DIRS: &[(&str, u32)] = &[
    ("/", 0o755),
    ("/bin", 0o755),
    ("/dev", 0o755),
    ("/etc", 0o755),
    ("/home", 0o755),
    ("/proc", 0o555),
    ("/root", 0o700),
    ("/sys", 0o555),
    ("/tmp", 0o1777),
    ("/usr", 0o755),
    ("/var", 0o755),
];

/// `path` made absolute against `cwd`, with `.`, `..` and repeated slashes resolved.
pub fn normalize_path(cwd: &str, path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let joined;
    let full = if path.starts_with('/') {
        path
    } else {
        joined = format!("{cwd}/{path}");
        &joined
    };
    for part in full.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

impl FileView {
    /// A filesystem with the usual top-level directories, `/etc/hostname`, the image's
    /// `files` and the container's `mounts`.
    pub fn new(files: &BTreeMap<String, ImageFile>, mounts: &[Mount], hostname: &str) -> FileView {
        let mut tree: BTreeMap<String, Node> = DEFAULT_DIRS
            .iter()
            .map(|(p, mode)| (p.to_string(), Node::Dir { mode: *mode }))
            .collect();
        let add_parents = |tree: &mut BTreeMap<String, Node>, path: &str| {
            let mut dir = parent_of(path);
            let mut missing = Vec::new();
            while !tree.contains_key(dir) {
                missing.push(dir.to_string());
                dir = parent_of(dir);
            }
            for dir in missing {
                tree.insert(dir, Node::Dir { mode: 0o755 });
            }
        };
        tree.insert(
            "/etc/hostname".into(),
            Node::File {
                data: Bytes::from(format!("{hostname}\n")),
                mode: 0o644,
            },
        );
        for (path, file) in files {
            let path = normalize_path("/", path);
            add_parents(&mut tree, &path);
            tree.insert(
                path,
                Node::File {
                    data: file.contents.clone(),
                    mode: file.mode,
                },
            );
        }
        let mut normalized: Vec<Mount> = Vec::new();
        for mount in mounts {
            let mut mount = mount.clone();
            mount.container_path = normalize_path("/", &mount.container_path);
            add_parents(&mut tree, &mount.container_path);
            let is_dir = std::fs::metadata(&mount.host_path).map_or(true, |m| m.is_dir());
            let node = if is_dir {
                Node::Dir { mode: 0o755 }
            } else {
                Node::File {
                    data: Bytes::new(),
                    mode: 0o644,
                }
            };
            tree.insert(mount.container_path.clone(), node);
            normalized.push(mount);
        }
        normalized.sort_by_key(|m| std::cmp::Reverse(m.container_path.len()));
        FileView {
            inner: Arc::new(ViewInner {
                tree: Mutex::new(tree),
                mounts: normalized,
            }),
        }
    }

    fn locate(&self, path: &str) -> Location {
        let path = normalize_path("/", path);
        for mount in &self.inner.mounts {
            let cp = mount.container_path.as_str();
            let rest = if path == cp {
                Some("")
            } else if cp == "/" {
                Some(&path[1..])
            } else {
                path.strip_prefix(cp).and_then(|r| r.strip_prefix('/'))
            };
            if let Some(rest) = rest {
                let mut host = PathBuf::from(&mount.host_path);
                if !rest.is_empty() {
                    host.push(rest);
                }
                return Location::Host {
                    path: host,
                    readonly: mount.readonly,
                };
            }
        }
        Location::Memory(path)
    }

    fn is_mount_point(&self, path: &str) -> bool {
        self.inner.mounts.iter().any(|m| m.container_path == path)
    }

    /// `stat`: what `path` is.
    pub fn stat(&self, path: &str) -> Result<FileInfo, FsError> {
        match self.locate(path) {
            Location::Host { path, .. } => {
                let meta = std::fs::metadata(path)?;
                Ok(FileInfo {
                    kind: if meta.is_dir() {
                        FileKind::Directory
                    } else {
                        FileKind::File
                    },
                    mode: host_mode(&meta),
                    size: if meta.is_dir() { 4096 } else { meta.len() },
                })
            }
            Location::Memory(path) => {
                let tree = self.inner.tree.lock();
                match tree.get(&path) {
                    Some(Node::Dir { mode }) => Ok(FileInfo {
                        kind: FileKind::Directory,
                        mode: *mode,
                        size: 4096,
                    }),
                    Some(Node::File { data, mode }) => Ok(FileInfo {
                        kind: FileKind::File,
                        mode: *mode,
                        size: data.len() as u64,
                    }),
                    None => Err(missing_or_not_dir(&tree, &path)),
                }
            }
        }
    }

    /// Whether `path` exists.
    pub fn exists(&self, path: &str) -> bool {
        self.stat(path).is_ok()
    }

    /// A file's contents. `IsADirectory` for a directory.
    pub fn read(&self, path: &str) -> Result<Bytes, FsError> {
        match self.locate(path) {
            Location::Host { path, .. } => {
                if std::fs::metadata(&path)?.is_dir() {
                    return Err(FsError::IsADirectory);
                }
                Ok(Bytes::from(std::fs::read(path)?))
            }
            Location::Memory(path) => {
                let tree = self.inner.tree.lock();
                match tree.get(&path) {
                    Some(Node::File { data, .. }) => Ok(data.clone()),
                    Some(Node::Dir { .. }) => Err(FsError::IsADirectory),
                    None => Err(missing_or_not_dir(&tree, &path)),
                }
            }
        }
    }

    /// Creates or truncates a file with `contents` (mode `0o644` for a new file). The parent
    /// directory must exist.
    pub fn write(&self, path: &str, contents: impl Into<Bytes>) -> Result<(), FsError> {
        self.put(path, contents.into(), None, false)
    }

    /// Creates or replaces a file with `contents` and `mode`.
    pub fn write_with_mode(
        &self,
        path: &str,
        contents: impl Into<Bytes>,
        mode: u32,
    ) -> Result<(), FsError> {
        self.put(path, contents.into(), Some(mode), false)
    }

    /// Appends to a file, creating it if needed (a shell's `>>`).
    pub fn append(&self, path: &str, contents: impl Into<Bytes>) -> Result<(), FsError> {
        self.put(path, contents.into(), None, true)
    }

    fn put(
        &self,
        path: &str,
        contents: Bytes,
        mode: Option<u32>,
        append: bool,
    ) -> Result<(), FsError> {
        match self.locate(path) {
            Location::Host { readonly: true, .. } => Err(FsError::ReadOnly),
            Location::Host { path, .. } => {
                use std::io::Write;
                if path.is_dir() {
                    return Err(FsError::IsADirectory);
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .append(append)
                    .truncate(!append)
                    .open(&path)?;
                file.write_all(&contents)?;
                set_host_mode(&path, mode)?;
                Ok(())
            }
            Location::Memory(path) => {
                let mut tree = self.inner.tree.lock();
                match tree.get(parent_of(&path)) {
                    Some(Node::Dir { .. }) => {}
                    Some(Node::File { .. }) => return Err(FsError::NotADirectory),
                    None => return Err(missing_or_not_dir(&tree, parent_of(&path))),
                }
                let node = match tree.get(&path) {
                    Some(Node::Dir { .. }) => return Err(FsError::IsADirectory),
                    Some(Node::File { data, mode: old }) => {
                        let data = if append {
                            let mut joined = data.to_vec();
                            joined.extend_from_slice(&contents);
                            Bytes::from(joined)
                        } else {
                            contents
                        };
                        Node::File {
                            data,
                            mode: mode.unwrap_or(*old),
                        }
                    }
                    None => Node::File {
                        data: contents,
                        mode: mode.unwrap_or(0o644),
                    },
                };
                tree.insert(path, node);
                Ok(())
            }
        }
    }

    /// Creates a directory (`mkdir`); with `parents`, its missing parents too, and an
    /// existing directory is fine (`mkdir -p`).
    pub fn mkdir(&self, path: &str, parents: bool) -> Result<(), FsError> {
        let path = normalize_path("/", path);
        if parents && path != "/" {
            let parent = parent_of(&path).to_string();
            if !self.stat(&parent).is_ok_and(|i| i.is_dir()) {
                self.mkdir(&parent, true)?;
            }
        }
        match self.locate(&path) {
            Location::Host {
                path: host,
                readonly,
            } => match std::fs::metadata(&host) {
                Ok(meta) if parents && meta.is_dir() => Ok(()),
                Ok(_) => Err(FsError::AlreadyExists),
                Err(_) if readonly => Err(FsError::ReadOnly),
                Err(_) => Ok(std::fs::create_dir(&host)?),
            },
            Location::Memory(path) => {
                let mut tree = self.inner.tree.lock();
                match tree.get(&path) {
                    Some(Node::Dir { .. }) if parents => return Ok(()),
                    Some(_) => return Err(FsError::AlreadyExists),
                    None => {}
                }
                match tree.get(parent_of(&path)) {
                    Some(Node::Dir { .. }) => {}
                    Some(Node::File { .. }) => return Err(FsError::NotADirectory),
                    None => return Err(missing_or_not_dir(&tree, parent_of(&path))),
                }
                tree.insert(path, Node::Dir { mode: 0o755 });
                Ok(())
            }
        }
    }

    /// Removes a file, or a directory: an empty one, or any with `recursive` (`rm -r`).
    /// `IsADirectory` for a directory without `recursive`; `Busy` for a mount point.
    pub fn remove(&self, path: &str, recursive: bool) -> Result<(), FsError> {
        let path = normalize_path("/", path);
        if path == "/" || self.is_mount_point(&path) {
            return Err(FsError::Busy);
        }
        match self.locate(&path) {
            Location::Host {
                readonly: true,
                path,
            } => {
                std::fs::metadata(path)?;
                Err(FsError::ReadOnly)
            }
            Location::Host { path, .. } => {
                let meta = std::fs::metadata(&path)?;
                if !meta.is_dir() {
                    Ok(std::fs::remove_file(&path)?)
                } else if recursive {
                    Ok(std::fs::remove_dir_all(&path)?)
                } else {
                    Err(FsError::IsADirectory)
                }
            }
            Location::Memory(path) => {
                let prefix = format!("{path}/");
                if self
                    .inner
                    .mounts
                    .iter()
                    .any(|m| m.container_path.starts_with(&prefix) && recursive)
                {
                    return Err(FsError::Busy);
                }
                let mut tree = self.inner.tree.lock();
                match tree.get(&path) {
                    None => return Err(missing_or_not_dir(&tree, &path)),
                    Some(Node::File { .. }) => {
                        tree.remove(&path);
                        return Ok(());
                    }
                    Some(Node::Dir { .. }) if !recursive => return Err(FsError::IsADirectory),
                    Some(Node::Dir { .. }) => {}
                }
                tree.retain(|k, _| *k != path && !k.starts_with(&prefix));
                Ok(())
            }
        }
    }

    /// A directory's entries, sorted by name (without `.` and `..`); `NotADirectory` for a
    /// file.
    pub fn list(&self, path: &str) -> Result<Vec<(String, FileInfo)>, FsError> {
        let path = normalize_path("/", path);
        let names: Vec<String> = match self.locate(&path) {
            Location::Host { path: host, .. } => {
                if !std::fs::metadata(&host)?.is_dir() {
                    return Err(FsError::NotADirectory);
                }
                std::fs::read_dir(&host)?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            }
            Location::Memory(path) => {
                let tree = self.inner.tree.lock();
                match tree.get(&path) {
                    Some(Node::Dir { .. }) => {}
                    Some(Node::File { .. }) => return Err(FsError::NotADirectory),
                    None => return Err(missing_or_not_dir(&tree, &path)),
                }
                let prefix = if path == "/" {
                    "/".to_string()
                } else {
                    format!("{path}/")
                };
                tree.range(prefix.clone()..)
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(&prefix))
                    .filter_map(|k| {
                        let rest = &k[prefix.len()..];
                        (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
                    })
                    .collect()
            }
        };
        let mut out: Vec<(String, FileInfo)> = names
            .into_iter()
            .filter_map(|name| {
                let info = self.stat(&child_path(&path, &name)).ok()?;
                Some((name, info))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// `path` and, for a directory, everything under it, parents before children: each
    /// entry's absolute path and what it is.
    pub fn walk(&self, path: &str) -> Result<Vec<(String, FileInfo)>, FsError> {
        let path = normalize_path("/", path);
        let info = self.stat(&path)?;
        let mut out = vec![(path.clone(), info)];
        if info.is_dir() {
            for (name, _) in self.list(&path)? {
                out.extend(self.walk(&child_path(&path, &name))?);
            }
        }
        Ok(out)
    }
}

fn missing_or_not_dir(tree: &BTreeMap<String, Node>, path: &str) -> FsError {
    let mut dir = parent_of(path);
    loop {
        match tree.get(dir) {
            Some(Node::File { .. }) => return FsError::NotADirectory,
            Some(Node::Dir { .. }) => return FsError::NotFound,
            None if dir == "/" => return FsError::NotFound,
            None => dir = parent_of(dir),
        }
    }
}

#[cfg(unix)]
fn host_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn host_mode(meta: &std::fs::Metadata) -> u32 {
    if meta.is_dir() {
        0o755
    } else {
        0o644
    }
}

#[cfg(unix)]
fn set_host_mode(path: &std::path::Path, mode: Option<u32>) -> Result<(), FsError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn set_host_mode(_path: &std::path::Path, _mode: Option<u32>) -> Result<(), FsError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> FileView {
        let files = BTreeMap::from([(
            "/usr/share/nginx/html/index.html".to_string(),
            ImageFile {
                contents: Bytes::from("<h1>hi</h1>"),
                mode: 0o644,
            },
        )]);
        FileView::new(&files, &[], "web")
    }

    #[test]
    fn paths_are_normalised_against_the_working_directory() {
        assert_eq!(normalize_path("/", "a/./b//c/.."), "/a/b");
        assert_eq!(normalize_path("/tmp", "../etc"), "/etc");
        assert_eq!(normalize_path("/", "/../.."), "/");
    }

    #[test]
    fn image_files_are_seeded_with_their_parents_and_the_hostname() {
        let fs = view();
        assert_eq!(
            fs.read("/usr/share/nginx/html/index.html").unwrap(),
            Bytes::from("<h1>hi</h1>")
        );
        assert!(fs.stat("/usr/share/nginx").unwrap().is_dir());
        assert_eq!(fs.read("/etc/hostname").unwrap(), Bytes::from("web\n"));
        let names: Vec<String> = fs
            .list("/usr/share")
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, vec!["nginx"]);
    }

    #[test]
    fn writes_need_a_parent_directory_and_removal_needs_recursion_for_directories() {
        let fs = view();
        assert_eq!(fs.write("/nope/x", "1"), Err(FsError::NotFound));
        assert_eq!(
            fs.write("/etc/hostname/x", "1"),
            Err(FsError::NotADirectory)
        );
        fs.mkdir("/data/a/b", true).unwrap();
        assert_eq!(fs.mkdir("/data", false), Err(FsError::AlreadyExists));
        fs.write("/data/a/b/f", "1").unwrap();
        fs.append("/data/a/b/f", "2").unwrap();
        assert_eq!(fs.read("/data/a/b/f").unwrap(), Bytes::from("12"));
        assert_eq!(fs.read("/data"), Err(FsError::IsADirectory));
        assert_eq!(fs.remove("/data", false), Err(FsError::IsADirectory));
        fs.remove("/data", true).unwrap();
        assert_eq!(fs.stat("/data/a/b/f"), Err(FsError::NotFound));
        assert_eq!(fs.remove("/data", true), Err(FsError::NotFound));
    }
}
