//! Kubernetes' atomic writer: a volume's files are written into a fresh timestamped
//! directory, then one `..data` symlink is swapped to it, so a reader inside a container sees
//! either the old set of files or the new one, never a mix.
//!
//! Layout of a target directory holding `token` and `ca.crt`:
//!
//! ```text
//! ..2026_12_07_21_30_00.123456789/token    the files of this version
//! ..2026_12_07_21_30_00.123456789/ca.crt
//! ..data -> ..2026_12_07_21_30_00.123456789
//! token -> ..data/token                   one link per top-level name
//! ca.crt -> ..data/ca.crt
//! ```

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};
use std::time::SystemTime;

/// The symlink naming the current version.
pub(crate) const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileContent {
    /// Relative to the volume's root; may contain directories (`a/b/c`).
    pub(crate) path: String,
    /// The bytes.
    pub(crate) data: Vec<u8>,
    /// Permission bits (`0o644`).
    pub(crate) mode: u32,
}

/// Whether `path` is a valid relative path of a volume file, as Kubernetes validates
/// `items[].path`: not empty, not absolute, no `..` component, not starting with `..`.
pub(crate) fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with("..")
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Writes `files` as the new content of `target` (created if missing). Returns `false` when
/// the current version already has exactly these files, contents and modes, and nothing was
/// written. Idempotent; safe to call again after a crash half-way (a leftover version
/// directory is removed on the next write).
pub(crate) fn write(target: &Path, files: &[FileContent], now: SystemTime) -> io::Result<bool> {
    for file in files {
        if !valid_path(&file.path) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid path {:?} in a volume", file.path),
            ));
        }
    }
    std::fs::create_dir_all(target)?;
    let current = std::fs::read_link(target.join(DATA_DIR)).ok();
    if let Some(current) = &current {
        if same_content(&target.join(current), files)? {
            return Ok(false);
        }
    }
    let version = version_name(now);
    let version_dir = target.join(&version);
    if version_dir.exists() {
        std::fs::remove_dir_all(&version_dir)?;
    }
    std::fs::create_dir(&version_dir)?;
    std::fs::set_permissions(&version_dir, std::fs::Permissions::from_mode(0o755))?;
    for file in files {
        let path = version_dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &file.data)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode & 0o7777))?;
    }
    // Swap `..data` with a rename, which is atomic.
    let tmp = target.join(DATA_DIR_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&version, &tmp)?;
    std::fs::rename(&tmp, target.join(DATA_DIR))?;
    // One link per top-level name; links of names no longer present go.
    let wanted: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.path.split('/').next().map(str::to_string))
        .collect();
    for name in &wanted {
        let link = target.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_DIR).join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(target)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            if name != DATA_DIR && name != version && entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            }
            continue;
        }
        if !wanted.contains(&name) && entry.file_type()?.is_symlink() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(true)
}

fn same_content(dir: &Path, files: &[FileContent]) -> io::Result<bool> {
    let mut present = BTreeSet::new();
    collect_files(dir, dir, &mut present)?;
    if present.len() != files.len() {
        return Ok(false);
    }
    for file in files {
        let path = dir.join(&file.path);
        if !present.contains(&file.path) {
            return Ok(false);
        }
        let metadata = std::fs::metadata(&path)?;
        if metadata.permissions().mode() & 0o7777 != file.mode & 0o7777
            || std::fs::read(&path)? != file.data
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.insert(relative.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// `..2026_12_07_21_30_00.123456789`: the version directory's name for `now` (UTC), as the
/// kubelet names them.
fn version_name(now: SystemTime) -> String {
    // `2026-12-07T21:30:00.123456789Z`, with Go's `2006_01_02_15_04_05.` layout's separators.
    let stamp = capstan_runtime::rfc3339_nanos(now);
    let stamp = stamp.trim_end_matches('Z');
    format!("..{}", stamp.replace(['-', 'T', ':'], "_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file(path: &str, data: &str) -> FileContent {
        FileContent {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode: 0o644,
        }
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "capstan-atomic-writer-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn files_are_reached_through_the_data_link_and_replaced_as_a_whole() {
        let dir = temp_dir("replace");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        assert!(write(&dir, &[file("token", "one"), file("ca.crt", "ca")], t0).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), "one");
        assert_eq!(
            std::fs::read_link(dir.join("token")).unwrap(),
            Path::new("..data/token")
        );
        let first = std::fs::read_link(dir.join(DATA_DIR)).unwrap();
        // The same content writes nothing.
        assert!(!write(&dir, &[file("token", "one"), file("ca.crt", "ca")], t0).unwrap());
        // New content: a new version, the old one removed, a dropped name unlinked.
        let t1 = t0 + Duration::from_secs(60);
        assert!(write(&dir, &[file("token", "two")], t1).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), "two");
        assert!(!dir.join(&first).exists());
        assert!(std::fs::symlink_metadata(dir.join("ca.crt")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nested_paths_and_modes_are_written() {
        let dir = temp_dir("nested");
        let mut secret = file("a/b/key", "s3cret");
        secret.mode = 0o400;
        write(&dir, &[secret], SystemTime::now()).unwrap();
        let path = dir.join("a/b/key");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o400
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paths_escaping_the_volume_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "..data"] {
            assert!(!valid_path(bad), "{bad}");
        }
        let dir = temp_dir("escape");
        let error = write(&dir, &[file("../x", "no")], SystemTime::now()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn version_names_are_utc_timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_765_142_400, 5);
        assert_eq!(version_name(t), "..2025_12_07_21_20_00.000000005");
    }
}
