//! Just enough of an OCI image layout tarball to import it: the `index.json` at its root.

use serde::Deserialize;

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
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
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
            })
        })
        .collect())
}

/// The contents of regular file `wanted` in a ustar archive, if it is there.
fn tar_file<'a>(archive: &'a [u8], wanted: &str) -> Result<Option<&'a [u8]>> {
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

/// Builds a ustar archive of `files` (tests and examples use it to make image tarballs).
#[cfg(test)]
pub(crate) fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..107].copy_from_slice(b"0000644");
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        let size = format!("{:011o}", data.len());
        header[124..135].copy_from_slice(size.as_bytes());
        header[136..147].copy_from_slice(b"00000000000");
        header[156] = b'0';
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
    out
}

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
                size: 42
            }]
        );
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
