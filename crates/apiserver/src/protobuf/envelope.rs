//! Kubernetes' protobuf envelope: the magic `k8s\0`, then a `runtime.Unknown` message
//! (`typeMeta` 1 with `apiVersion` 1 and `kind` 2, `raw` 2, `contentEncoding` 3,
//! `contentType` 4) whose `raw` bytes are the object's own message.

use super::wire::{put_delimited, Reader, WireValue};

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// An unwrapped envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// `typeMeta.apiVersion` (may be empty).
    pub api_version: String,
    /// `typeMeta.kind` (may be empty).
    pub kind: String,
    /// The object's message bytes.
    pub raw: &'a [u8],
    /// `contentEncoding` (empty: none).
    pub content_encoding: String,
}

/// Reads the envelope of `body`. Errors: a missing magic prefix or a malformed `Unknown`.
pub fn unwrap(body: &[u8]) -> Result<Envelope<'_>, String> {
    let unknown = body.strip_prefix(MAGIC.as_slice()).ok_or_else(|| {
        "the body does not start with Kubernetes' protobuf prefix \"k8s\\0\"".to_string()
    })?;
    let mut envelope = Envelope {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
        content_encoding: String::new(),
    };
    let mut reader = Reader::new(unknown);
    while !reader.is_empty() {
        let (tag, value) = reader.field().map_err(|e| format!("envelope: {e}"))?;
        let WireValue::Delimited(bytes) = value else {
            continue;
        };
        match tag {
            1 => {
                let mut type_meta = Reader::new(bytes);
                while !type_meta.is_empty() {
                    let (tag, value) = type_meta
                        .field()
                        .map_err(|e| format!("envelope typeMeta: {e}"))?;
                    if let WireValue::Delimited(text) = value {
                        let text = utf8(text, "typeMeta")?;
                        match tag {
                            1 => envelope.api_version = text,
                            2 => envelope.kind = text,
                            _ => {}
                        }
                    }
                }
            }
            2 => envelope.raw = bytes,
            3 => envelope.content_encoding = utf8(bytes, "contentEncoding")?,
            _ => {}
        }
    }
    Ok(envelope)
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("envelope {what} is not UTF-8"))
}

/// `raw` in an envelope naming `api_version` and `kind`.
pub fn wrap(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    put_delimited(&mut type_meta, 1, api_version.as_bytes());
    put_delimited(&mut type_meta, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    put_delimited(&mut out, 1, &type_meta);
    put_delimited(&mut out, 2, raw);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_its_type_and_bytes() {
        let body = wrap("apps/v1", "Deployment", b"\x0a\x00");
        let envelope = unwrap(&body).unwrap();
        assert_eq!(envelope.api_version, "apps/v1");
        assert_eq!(envelope.kind, "Deployment");
        assert_eq!(envelope.raw, b"\x0a\x00");
    }

    #[test]
    fn a_body_without_the_magic_prefix_is_refused() {
        assert!(unwrap(b"{\"kind\":\"Pod\"}").unwrap_err().contains("k8s"));
        assert!(unwrap(b"k8s").is_err());
    }

    #[test]
    fn a_truncated_envelope_is_an_error() {
        let body = wrap("v1", "Pod", b"abc");
        assert!(unwrap(&body[..body.len() - 1])
            .unwrap_err()
            .contains("truncated"));
    }
}
