//! Reading and writing the directory's files: pairs, owner-only permissions for keys, atomic
//! replacement.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::SelfSignedError;

/// The bytes of a certificate file and of its key file.
pub(super) type Pair = (Vec<u8>, Vec<u8>);

/// Both files of a pair, or `None` when neither exists.
pub(super) fn read_pair(cert: &Path, key: &Path) -> Result<Option<Pair>, SelfSignedError> {
    match (read_if_exists(cert)?, read_if_exists(key)?) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(SelfSignedError::IncompletePair {
            present: cert.to_path_buf(),
            missing: key.to_path_buf(),
        }),
        (None, Some(_)) => Err(SelfSignedError::IncompletePair {
            present: key.to_path_buf(),
            missing: cert.to_path_buf(),
        }),
    }
}

pub(super) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, SelfSignedError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SelfSignedError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(super) fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, SelfSignedError> {
    String::from_utf8(bytes).map_err(|_| SelfSignedError::Invalid {
        path: path.to_path_buf(),
        reason: "not text (PEM)".into(),
    })
}

/// Writes `bytes` at `path` through a temporary file renamed over it, so readers never see a
/// half-written file; `private` files are readable by their owner only (Unix).
pub(super) fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), SelfSignedError> {
    let io_error = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| SelfSignedError::Io {
            action,
            path,
            source,
        }
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(&temporary)
        .map_err(io_error("writing", &temporary))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing", &temporary))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io_error("writing", path))
}
