//! What the registry assigns on create: generated names, UIDs and timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use capstan_api::k8s_openapi::jiff::Timestamp;

/// The characters of a generated name suffix: Kubernetes' `utilrand` alphabet, without vowels
/// (no accidental words) and without look-alikes (`0`, `1`, `3`).
pub(crate) const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The length of a generated name suffix.
pub(crate) const SUFFIX_LENGTH: usize = 5;

/// `generateName` is cut to this many bytes so the generated name fits a 63-byte label.
const MAX_GENERATED_PREFIX: usize = 63 - SUFFIX_LENGTH;

/// A name from `generateName`: the prefix (cut to 58 bytes) plus five random characters, as
/// Kubernetes' `SimpleNameGenerator` makes it.
pub(crate) fn generate_name(prefix: &str) -> String {
    let mut cut = prefix.len().min(MAX_GENERATED_PREFIX);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut name = String::with_capacity(cut + SUFFIX_LENGTH);
    name.push_str(&prefix[..cut]);
    for _ in 0..SUFFIX_LENGTH {
        name.push(SUFFIX_ALPHABET[fastrand::usize(..SUFFIX_ALPHABET.len())] as char);
    }
    name
}

/// A fresh `metadata.uid`: a random (version 4) UUID.
pub(crate) fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Now, as Kubernetes writes a `metav1.Time`: RFC 3339 in UTC, whole seconds
/// (`2024-05-01T12:00:00Z`).
pub(crate) fn now() -> String {
    in_seconds(0)
}

/// `seconds` from now, written as [`now`] writes it.
pub(crate) fn in_seconds(offset: i64) -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    i64::try_from(seconds)
        .ok()
        .and_then(|s| Timestamp::from_second(s.saturating_add(offset)).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_keep_the_prefix_and_add_five_alphabet_characters() {
        let name = generate_name("web-");
        assert_eq!(name.len(), 9);
        assert!(name.starts_with("web-"));
        assert!(name[4..].bytes().all(|b| SUFFIX_ALPHABET.contains(&b)));
    }

    #[test]
    fn long_prefixes_are_cut_so_the_name_fits_a_label() {
        let name = generate_name(&"a".repeat(100));
        assert_eq!(name.len(), 63);
    }

    #[test]
    fn uids_are_version_4_uuids() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(uid, new_uid());
    }

    #[test]
    fn timestamps_are_rfc3339_whole_seconds_in_utc() {
        let now = now();
        assert_eq!(now.len(), "2024-05-01T12:00:00Z".len(), "{now}");
        assert!(now.ends_with('Z'));
        assert!(now.parse::<Timestamp>().is_ok());
    }
}
