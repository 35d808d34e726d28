//! Just enough PEM and DER to read the key files kube-apiserver reads
//! (`--service-account-signing-key-file`, `--service-account-key-file`) and to write the one
//! PKCS#8 structure a generated P-256 key needs.

use base64::Engine;

use super::KeyError;

/// One PEM block: its label (`PRIVATE KEY`, `EC PRIVATE KEY`, ...) and its DER bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PemBlock {
    pub(crate) label: String,
    pub(crate) der: Vec<u8>,
}

/// Every PEM block of `text`, in order. Text outside the blocks is ignored, as Go's
/// `pem.Decode` ignores it.
///
/// Errors: [`KeyError::Pem`] for a block without its end line or with bad base64.
pub(crate) fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, KeyError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            let line = line.trim();
            if line == end {
                closed = true;
                break;
            }
            if line.contains(':') {
                // RFC 1421 headers (`Proc-Type: ...`): encrypted keys are not supported.
                return Err(KeyError::Pem(format!(
                    "{label} block has headers (encrypted?)"
                )));
            }
            body.push_str(line);
        }
        if !closed {
            return Err(KeyError::Pem(format!("{label} block has no end line")));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|e| KeyError::Pem(format!("{label} block: {e}")))?;
        blocks.push(PemBlock {
            label: label.to_string(),
            der,
        });
    }
    Ok(blocks)
}

/// One DER element: its tag and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Element<'a> {
    pub(crate) tag: u8,
    pub(crate) content: &'a [u8],
}

pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const OID: u8 = 0x06;
pub(crate) const SEQUENCE: u8 = 0x30;

/// `rsaEncryption` (1.2.840.113549.1.1.1).
pub(crate) const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// `id-ecPublicKey` (1.2.840.10045.2.1).
pub(crate) const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// `prime256v1` (1.2.840.10045.3.1.7), the curve of ES256.
pub(crate) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn malformed(what: &str) -> KeyError {
    KeyError::Malformed(what.to_string())
}

/// Reads one element from the front of `input`; returns it and what follows.
pub(crate) fn read(input: &[u8]) -> Result<(Element<'_>, &[u8]), KeyError> {
    let [tag, first, rest @ ..] = input else {
        return Err(malformed("truncated DER element"));
    };
    let (length, rest) = if first & 0x80 == 0 {
        (usize::from(*first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(malformed("bad DER length"));
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return Err(malformed("truncated DER content"));
    }
    Ok((
        Element {
            tag: *tag,
            content: &rest[..length],
        },
        &rest[length..],
    ))
}

/// Every element inside `content` (a SEQUENCE's content), in order.
pub(crate) fn children(mut content: &[u8]) -> Result<Vec<Element<'_>>, KeyError> {
    let mut elements = Vec::new();
    while !content.is_empty() {
        let (element, rest) = read(content)?;
        elements.push(element);
        content = rest;
    }
    Ok(elements)
}

/// The content of the single element `der`, which must carry `tag`.
pub(crate) fn expect<'a>(der: &'a [u8], tag: u8, what: &str) -> Result<Vec<Element<'a>>, KeyError> {
    let (element, rest) = read(der)?;
    if element.tag != tag || !rest.is_empty() {
        return Err(malformed(what));
    }
    children(element.content)
}

/// An unsigned big-endian INTEGER's bytes without leading zeros.
pub(crate) fn unsigned(element: &Element<'_>) -> Result<Vec<u8>, KeyError> {
    if element.tag != INTEGER {
        return Err(malformed("expected an INTEGER"));
    }
    let start = element
        .content
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(element.content.len());
    Ok(element.content[start..].to_vec())
}

/// Encodes one element.
pub(crate) fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let length = content.len();
    if length < 0x80 {
        out.push(length as u8);
    } else {
        let bytes: Vec<u8> = length
            .to_be_bytes()
            .into_iter()
            .skip_while(|byte| *byte == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The PKCS#8 `PrivateKeyInfo` of a P-256 key given as a SEC1 `ECPrivateKey`.
pub(crate) fn p256_pkcs8(sec1: &[u8]) -> Vec<u8> {
    let algorithm = [encode(OID, OID_EC), encode(OID, OID_P256)].concat();
    let info = [
        encode(INTEGER, &[0]),
        encode(SEQUENCE, &algorithm),
        encode(OCTET_STRING, sec1),
    ]
    .concat();
    encode(SEQUENCE, &info)
}

/// A SEC1 `ECPrivateKey` holding the scalar `secret` alone (the public key is derived).
pub(crate) fn sec1_from_scalar(secret: &[u8]) -> Vec<u8> {
    let key = [encode(INTEGER, &[1]), encode(OCTET_STRING, secret)].concat();
    encode(SEQUENCE, &key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_then_reading_gives_the_same_element_back_for_long_and_short_lengths() {
        for size in [0usize, 5, 127, 128, 300, 70_000] {
            let content = vec![7u8; size];
            let der = encode(OCTET_STRING, &content);
            let (element, rest) = read(&der).unwrap();
            assert!(rest.is_empty());
            assert_eq!(element.tag, OCTET_STRING);
            assert_eq!(element.content, content.as_slice());
        }
    }

    #[test]
    fn pem_blocks_are_read_in_order_with_their_labels() {
        let text = "junk\n-----BEGIN PUBLIC KEY-----\nAQID\n-----END PUBLIC KEY-----\n\
                    -----BEGIN PRIVATE KEY-----\nBAU=\n-----END PRIVATE KEY-----\n";
        let blocks = pem_blocks(text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "PUBLIC KEY");
        assert_eq!(blocks[0].der, vec![1, 2, 3]);
        assert_eq!(blocks[1].label, "PRIVATE KEY");
        assert_eq!(blocks[1].der, vec![4, 5]);
        assert!(pem_blocks("-----BEGIN X-----\nAQID\n").is_err());
    }

    #[test]
    fn truncated_der_is_refused() {
        assert!(read(&[0x30]).is_err());
        assert!(read(&[0x30, 0x05, 0x01]).is_err());
        assert!(read(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
    }
}
