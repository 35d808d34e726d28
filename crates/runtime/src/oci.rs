//! OCI image layout tarballs: reading the `index.json` and blobs of one (what
//! [`import_image`](crate::ContainerRuntime::import_image) takes), and building a one-layer
//! image in memory with [`ImageArchive`], for nodes without a registry and for tests.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Result, RuntimeError};

/// One image named in an archive's `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexedImage {
    /// The reference it is imported as.
    pub(crate) name: String,
    /// The manifest's digest (`sha256:...`), which the fake uses as the image id.
    pub(crate) digest: String,
    /// The manifest's size.
    pub(crate) size: u64,
    /// The manifest's media type (empty when the index does not say).
    pub(crate) media_type: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(default, rename = "mediaType")]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The images of an OCI layout tarball, named by `io.containerd.image.name` or else
/// `org.opencontainers.image.ref.name` (as `ctr images import` names them). Manifests
/// without a name are skipped.
pub(crate) fn read_index(archive: &[u8]) -> Result<Vec<IndexedImage>> {
    let index = tar_file(archive, "index.json")?
        .ok_or_else(|| RuntimeError::InvalidArgument("no index.json in the archive".into()))?;
    let index: Index = serde_json::from_slice(index)
        .map_err(|e| RuntimeError::InvalidArgument(format!("index.json: {e}")))?;
    Ok(index
        .manifests
        .into_iter()
        .filter_map(|m| {
            let name = m
                .annotations
                .get("io.containerd.image.name")
                .or_else(|| m.annotations.get("org.opencontainers.image.ref.name"))?
                .clone();
            Some(IndexedImage {
                name,
                digest: m.digest,
                size: m.size,
                media_type: m.media_type,
            })
        })
        .collect())
}

/// The contents of regular file `wanted` in a ustar archive, if it is there.
pub(crate) fn tar_file<'a>(archive: &'a [u8], wanted: &str) -> Result<Option<&'a [u8]>> {
    let bad = |what: &str| RuntimeError::InvalidArgument(format!("not a tar archive: {what}"));
    let mut at = 0;
    while at + 512 <= archive.len() {
        let header = &archive[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let name = cstr(&header[0..100]);
        let prefix = cstr(&header[345..500]);
        let size = octal(&header[124..136]).ok_or_else(|| bad("size field"))?;
        let kind = header[156];
        let start = at + 512;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= archive.len())
            .ok_or_else(|| bad("truncated entry"))?;
        let full = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        if (kind == b'0' || kind == 0) && full.trim_start_matches("./") == wanted {
            return Ok(Some(&archive[start..end]));
        }
        at = start + size.div_ceil(512) * 512;
    }
    if at == 0 {
        return Err(bad("empty"));
    }
    Ok(None)
}

fn cstr(field: &[u8]) -> &str {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    std::str::from_utf8(&field[..end]).unwrap_or_default()
}

fn octal(field: &[u8]) -> Option<usize> {
    let text = cstr(field).trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    usize::from_str_radix(text, 8).ok()
}

/// One entry of a tar archive written by [`tar_entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum TarEntry {
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// Builds a ustar archive of regular files with mode 0644.
#[cfg(test)]
pub(crate) fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<TarEntry> = files
        .iter()
        .map(|(path, data)| TarEntry::File {
            path: path.to_string(),
            mode: 0o644,
            data: data.to_vec(),
        })
        .collect();
    tar_entries(&entries).expect("short names")
}

/// Builds a ustar archive (owner root, mtime 0). Names longer than 100 bytes are refused.
fn tar_entries(entries: &[TarEntry]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for entry in entries {
        let (path, mode, kind, link, data): (&str, u32, u8, &str, &[u8]) = match entry {
            TarEntry::File { path, mode, data } => (path, *mode, b'0', "", data),
            TarEntry::Dir { path, mode } => (path, *mode, b'5', "", &[]),
            TarEntry::Symlink { path, target } => (path, 0o777, b'2', target, &[]),
        };
        if path.len() > 100 || link.len() > 100 {
            return Err(RuntimeError::InvalidArgument(format!(
                "tar entry {path:?}: names are limited to 100 bytes"
            )));
        }
        let mut header = [0u8; 512];
        header[..path.len()].copy_from_slice(path.as_bytes());
        header[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        header[136..147].copy_from_slice(b"00000000000");
        header[156] = kind;
        header[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The OCI architecture name of the machine this was built for (`amd64`, `arm64`, ...).
pub(crate) fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A one-layer OCI image built in memory and written as an OCI image layout tarball (the
/// format of `ctr images export`), ready for
/// [`import_image`](crate::ContainerRuntime::import_image).
///
/// ```
/// # use capstan_runtime::oci::ImageArchive;
/// let archive = ImageArchive::new("example.com/hello:1")
///     .file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
///     .entrypoint(["/bin/hello"])
///     .build()
///     .unwrap();
/// assert!(!archive.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArchive {
    name: String,
    entries: Vec<TarEntry>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    working_dir: String,
    user: String,
}

impl ImageArchive {
    /// An empty image to be imported as `name` (normalised on import: `busybox` is
    /// `docker.io/library/busybox:latest`).
    pub fn new(name: impl Into<String>) -> Self {
        ImageArchive {
            name: name.into(),
            entries: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            working_dir: String::new(),
            user: String::new(),
        }
    }

    /// Adds a regular file at `path` (relative to the root, no leading `/`) with `mode`.
    pub fn file(mut self, path: impl Into<String>, mode: u32, data: Vec<u8>) -> Self {
        self.entries.push(TarEntry::File {
            path: path.into(),
            mode,
            data,
        });
        self
    }

    /// Adds a directory (mode 0755).
    pub fn dir(mut self, path: impl Into<String>) -> Self {
        self.entries.push(TarEntry::Dir {
            path: path.into(),
            mode: 0o755,
        });
        self
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn symlink(mut self, path: impl Into<String>, target: impl Into<String>) -> Self {
        self.entries.push(TarEntry::Symlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }

    /// Sets the image's entrypoint.
    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.entrypoint = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the image's default command (the arguments after the entrypoint).
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.cmd = args.into_iter().map(Into::into).collect();
        self
    }

    /// Adds an environment variable (`KEY=value`).
    pub fn env(mut self, variable: impl Into<String>) -> Self {
        self.env.push(variable.into());
        self
    }

    /// Sets the working directory.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = dir.into();
        self
    }

    /// Sets the user (`uid[:gid]`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// A busybox image: the static `busybox` binary at `/bin/busybox`, a symlink in `/bin`
    /// for each applet, `/tmp`, `/etc`, `/proc`, `/dev`, `/sys`, and `sh` as the command.
    pub fn busybox(name: impl Into<String>, binary: Vec<u8>, applets: &[&str]) -> Self {
        let mut image = ImageArchive::new(name);
        for dir in ["bin", "etc", "tmp", "proc", "dev", "sys", "root"] {
            image = image.dir(dir);
        }
        image = image.file("bin/busybox", 0o755, binary);
        for applet in applets.iter().filter(|a| **a != "busybox") {
            image = image.symlink(format!("bin/{applet}"), "busybox");
        }
        image
            .file(
                "etc/passwd",
                0o644,
                b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
                    .to_vec(),
            )
            .file(
                "etc/group",
                0o644,
                b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
            )
            .cmd(["sh"])
    }

    /// Writes the OCI image layout tarball: `oci-layout`, `index.json` naming the image, and
    /// the layer, config and manifest blobs. `InvalidArgument` for a name over 100 bytes.
    pub fn build(&self) -> Result<Vec<u8>> {
        let layer = tar_entries(&self.entries)?;
        let layer_digest = sha256_digest(&layer);
        let mut config = serde_json::json!({
            "architecture": oci_architecture(),
            "os": "linux",
            "config": { "Env": self.env },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        });
        let fields = [
            (
                "Entrypoint",
                serde_json::json!(self.entrypoint),
                !self.entrypoint.is_empty(),
            ),
            ("Cmd", serde_json::json!(self.cmd), !self.cmd.is_empty()),
            (
                "WorkingDir",
                serde_json::json!(self.working_dir),
                !self.working_dir.is_empty(),
            ),
            ("User", serde_json::json!(self.user), !self.user.is_empty()),
        ];
        for (key, value, set) in fields {
            if set {
                config["config"][key] = value;
            }
        }
        let config =
            serde_json::to_vec(&config).map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let config_digest = sha256_digest(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len() },
            "layers": [{ "mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer.len() }],
        }))
        .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let manifest_digest = sha256_digest(&manifest);
        let tag = self
            .name
            .rsplit_once(':')
            .map(|(_, t)| t)
            .filter(|t| !t.contains('/'));
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {
                    "io.containerd.image.name": self.name,
                    "org.opencontainers.image.ref.name": tag.unwrap_or("latest"),
                },
            }],
        }))
        .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let blob = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        tar_entries(&[
            TarEntry::File {
                path: "oci-layout".into(),
                mode: 0o644,
                data: br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            },
            TarEntry::Dir {
                path: "blobs".into(),
                mode: 0o755,
            },
            TarEntry::Dir {
                path: "blobs/sha256".into(),
                mode: 0o755,
            },
            TarEntry::File {
                path: blob(&layer_digest),
                mode: 0o644,
                data: layer,
            },
            TarEntry::File {
                path: blob(&config_digest),
                mode: 0o644,
                data: config,
            },
            TarEntry::File {
                path: blob(&manifest_digest),
                mode: 0o644,
                data: manifest,
            },
            TarEntry::File {
                path: "index.json".into(),
                mode: 0o644,
                data: index,
            },
        ])
    }
}

/// The media type of an OCI image manifest.
pub(crate) const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of an OCI image config.
pub(crate) const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The media type of an uncompressed OCI layer.
pub(crate) const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oci_layout_tarball_yields_its_named_manifests() {
        let index = br#"{"schemaVersion":2,"manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":42,
             "annotations":{"io.containerd.image.name":"docker.io/library/busybox:latest",
                            "org.opencontainers.image.ref.name":"latest"}},
            {"digest":"sha256:bb","size":7}]}"#;
        let archive = tar(&[("oci-layout", b"{}"), ("index.json", index)]);
        let images = read_index(&archive).unwrap();
        assert_eq!(
            images,
            vec![IndexedImage {
                name: "docker.io/library/busybox:latest".into(),
                digest: "sha256:aa".into(),
                size: 42,
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            }]
        );
    }

    #[test]
    fn a_built_archive_names_its_image_and_holds_every_blob_it_references() {
        let archive = ImageArchive::new("example.com/app:v1")
            .dir("bin")
            .file("bin/app", 0o755, b"x".to_vec())
            .symlink("bin/sh", "app")
            .entrypoint(["/bin/app"])
            .build()
            .unwrap();
        let images = read_index(&archive).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].name, "example.com/app:v1");
        let blob = |digest: &str| {
            let data = tar_file(&archive, &format!("blobs/sha256/{}", &digest[7..]))
                .unwrap()
                .expect("blob present");
            assert_eq!(sha256_digest(data), digest);
            data
        };
        let manifest: serde_json::Value = serde_json::from_slice(blob(&images[0].digest)).unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
        assert_eq!(config["config"]["Entrypoint"][0], "/bin/app");
        let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
        assert_eq!(tar_file(layer, "bin/app").unwrap(), Some(&b"x"[..]));
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            manifest["layers"][0]["digest"]
        );
    }

    #[test]
    fn overlong_names_are_refused() {
        let long = "a".repeat(101);
        assert!(matches!(
            ImageArchive::new("x").file(long, 0o644, vec![]).build(),
            Err(RuntimeError::InvalidArgument(_))
        ));
    }

    #[test]
    fn garbage_is_an_invalid_argument() {
        assert!(matches!(
            read_index(b"hello"),
            Err(RuntimeError::InvalidArgument(_))
        ));
        let archive = tar(&[("oci-layout", b"{}")]);
        assert!(matches!(
            read_index(&archive),
            Err(RuntimeError::InvalidArgument(_))
        ));
    }
}
