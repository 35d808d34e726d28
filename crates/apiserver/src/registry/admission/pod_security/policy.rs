//! A namespace's Pod Security policy: the levels, the versions, and how the
//! `pod-security.kubernetes.io/*` labels resolve to a [`Policy`].

use std::collections::BTreeMap;
use std::fmt;

use capstan_api::FieldError;

/// The prefix of every Pod Security label (and of its audit annotations).
pub const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";
/// The label of the level Pods must meet to be admitted.
pub const ENFORCE_LEVEL_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// The label of the policy version the enforce level is evaluated at.
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";
/// The label of the level whose violations are recorded for audit.
pub const AUDIT_LEVEL_LABEL: &str = "pod-security.kubernetes.io/audit";
/// The label of the policy version of the audit level.
pub const AUDIT_VERSION_LABEL: &str = "pod-security.kubernetes.io/audit-version";
/// The label of the level whose violations are returned to the client as warnings.
pub const WARN_LEVEL_LABEL: &str = "pod-security.kubernetes.io/warn";
/// The label of the policy version of the warn level.
pub const WARN_VERSION_LABEL: &str = "pod-security.kubernetes.io/warn-version";

/// Why a label value is not a level or a version. The texts are Kubernetes' field error
/// details.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not `privileged`, `baseline` or `restricted`.
    #[error("must be one of privileged, baseline, restricted")]
    Level,
    /// Not `latest` or `v1.<minor>`.
    #[error("must be \"latest\" or \"v1.x\"")]
    Version,
}

/// A Pod Security Standards level, ordered from the least to the most strict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Everything is allowed.
    Privileged,
    /// Known privilege escalations are refused.
    Baseline,
    /// Hardened: the baseline plus the restricted checks.
    Restricted,
}

impl Level {
    /// Parses a label value. Errors: [`PolicyError::Level`] for anything else.
    pub fn parse(value: &str) -> Result<Level, PolicyError> {
        match value {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err(PolicyError::Level),
        }
    }

    /// The label value: `privileged`, `baseline` or `restricted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy version: `latest`, or `v1.<minor>`. Every version is evaluated with the checks of
/// the latest policy; the version only shows in messages (`"restricted:v1.30"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// `latest`.
    Latest,
    /// `v1.<minor>`.
    V1(u32),
}

impl Version {
    /// Parses a label value: `latest` or `v1.<minor>` (no leading zero, as Kubernetes'
    /// `^v1\.(0|[1-9][0-9]*)$`). Errors: [`PolicyError::Version`].
    pub fn parse(value: &str) -> Result<Version, PolicyError> {
        if value == "latest" {
            return Ok(Version::Latest);
        }
        let minor = value.strip_prefix("v1.").ok_or(PolicyError::Version)?;
        let digits = !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit());
        if !digits || (minor.len() > 1 && minor.starts_with('0')) {
            return Err(PolicyError::Version);
        }
        minor
            .parse()
            .map(Version::V1)
            .map_err(|_| PolicyError::Version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Latest => f.write_str("latest"),
            Version::V1(minor) => write!(f, "v1.{minor}"),
        }
    }
}

/// A level at a version, as messages print it: `restricted:latest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LevelVersion {
    /// The level.
    pub level: Level,
    /// The version.
    pub version: Version,
}

impl LevelVersion {
    /// `privileged:latest`, the default of every mode.
    pub const PRIVILEGED: LevelVersion = LevelVersion {
        level: Level::Privileged,
        version: Version::Latest,
    };

    /// `level` at `latest`.
    pub fn latest(level: Level) -> LevelVersion {
        LevelVersion {
            level,
            version: Version::Latest,
        }
    }

    /// Whether both are privileged (at any version), or equal.
    pub fn equivalent(&self, other: &LevelVersion) -> bool {
        (self.level == Level::Privileged && other.level == Level::Privileged) || self == other
    }
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level, self.version)
    }
}

/// The three modes of a namespace's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Pods violating it are refused (403).
    pub enforce: LevelVersion,
    /// Violations are recorded for audit.
    pub audit: LevelVersion,
    /// Violations are returned as `Warning` headers.
    pub warn: LevelVersion,
}

impl Default for Policy {
    /// `privileged:latest` in every mode: Kubernetes' default when no admission configuration
    /// says otherwise.
    fn default() -> Self {
        Policy {
            enforce: LevelVersion::PRIVILEGED,
            audit: LevelVersion::PRIVILEGED,
            warn: LevelVersion::PRIVILEGED,
        }
    }
}

impl Policy {
    /// Whether every mode is privileged (nothing to check).
    pub fn fully_privileged(&self) -> bool {
        self.enforce.level == Level::Privileged
            && self.audit.level == Level::Privileged
            && self.warn.level == Level::Privileged
    }

    /// Whether each mode is [equivalent](LevelVersion::equivalent) to `other`'s.
    pub fn equivalent(&self, other: &Policy) -> bool {
        self.enforce.equivalent(&other.enforce)
            && self.audit.equivalent(&other.audit)
            && self.warn.equivalent(&other.warn)
    }

    /// Resolves a namespace's labels to its policy, as Kubernetes does: a missing label keeps
    /// `defaults`' value; an invalid enforce level is `restricted` (fail closed), an invalid
    /// audit or warn level `privileged` (fail open), an invalid version `latest`; and when
    /// the enforce level is set but no warn level, warn takes the enforce level (and version,
    /// unless `warn-version` is set) if it is stricter. A policy is always returned, with one
    /// field error per invalid label (`metadata.labels[<label>]: Invalid value`).
    pub fn from_labels(
        labels: &BTreeMap<String, String>,
        defaults: &Policy,
    ) -> (Policy, Vec<FieldError>) {
        let mut policy = *defaults;
        let mut errors = Vec::new();
        let mut invalid = |label: &str, value: &str, error: PolicyError| {
            errors.push(FieldError::invalid(
                format!("metadata.labels[{label}]"),
                value,
                error.to_string(),
            ));
        };
        let mut has_enforce_level = false;
        if let Some(value) = labels.get(ENFORCE_LEVEL_LABEL) {
            match Level::parse(value) {
                Ok(level) => {
                    policy.enforce.level = level;
                    has_enforce_level = true;
                }
                Err(error) => {
                    policy.enforce.level = Level::Restricted;
                    invalid(ENFORCE_LEVEL_LABEL, value, error);
                }
            }
        }
        let mut version = |label: &str, slot: &mut Version| {
            if let Some(value) = labels.get(label) {
                *slot = Version::parse(value).unwrap_or_else(|error| {
                    invalid(label, value, error);
                    Version::Latest
                });
            }
        };
        version(ENFORCE_VERSION_LABEL, &mut policy.enforce.version);
        version(AUDIT_VERSION_LABEL, &mut policy.audit.version);
        version(WARN_VERSION_LABEL, &mut policy.warn.version);
        let mut open_level = |label: &str, slot: &mut Level| {
            if let Some(value) = labels.get(label) {
                *slot = Level::parse(value).unwrap_or_else(|error| {
                    errors.push(FieldError::invalid(
                        format!("metadata.labels[{label}]"),
                        value.as_str(),
                        error.to_string(),
                    ));
                    Level::Privileged
                });
            }
        };
        open_level(AUDIT_LEVEL_LABEL, &mut policy.audit.level);
        open_level(WARN_LEVEL_LABEL, &mut policy.warn.level);
        let has_warn_level = labels.contains_key(WARN_LEVEL_LABEL);
        if !has_warn_level && has_enforce_level && policy.enforce.level > policy.warn.level {
            policy.warn.level = policy.enforce.level;
            if !labels.contains_key(WARN_VERSION_LABEL) {
                policy.warn.version = policy.enforce.version;
            }
        }
        errors.sort_by_key(|e| label_order(&e.field));
        (policy, errors)
    }
}

/// Kubernetes reports label errors in the order enforce, enforce-version, audit,
/// audit-version, warn, warn-version.
fn label_order(field: &str) -> usize {
    [
        ENFORCE_LEVEL_LABEL,
        ENFORCE_VERSION_LABEL,
        AUDIT_LEVEL_LABEL,
        AUDIT_VERSION_LABEL,
        WARN_LEVEL_LABEL,
        WARN_VERSION_LABEL,
    ]
    .iter()
    .position(|label| field == format!("metadata.labels[{label}]"))
    .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn levels_and_versions_parse_as_kubernetes_spells_them() {
        assert_eq!(Level::parse("baseline"), Ok(Level::Baseline));
        assert_eq!(Level::parse("Baseline"), Err(PolicyError::Level));
        assert_eq!(Version::parse("latest"), Ok(Version::Latest));
        assert_eq!(Version::parse("v1.30"), Ok(Version::V1(30)));
        assert_eq!(Version::parse("v1.0"), Ok(Version::V1(0)));
        for bad in ["v1.01", "v2.3", "1.30", "v1.", "v1.x", "Latest", ""] {
            assert_eq!(Version::parse(bad), Err(PolicyError::Version), "{bad}");
        }
        assert_eq!(
            LevelVersion {
                level: Level::Restricted,
                version: Version::V1(25)
            }
            .to_string(),
            "restricted:v1.25"
        );
    }

    #[test]
    fn no_labels_keep_the_privileged_defaults() {
        let (policy, errors) = Policy::from_labels(&BTreeMap::new(), &Policy::default());
        assert!(errors.is_empty());
        assert!(policy.fully_privileged());
    }

    #[test]
    fn an_enforce_level_also_warns_at_that_level_unless_warn_is_set() {
        let (policy, _) = Policy::from_labels(
            &labels(&[
                (ENFORCE_LEVEL_LABEL, "restricted"),
                (ENFORCE_VERSION_LABEL, "v1.29"),
            ]),
            &Policy::default(),
        );
        assert_eq!(policy.warn.level, Level::Restricted);
        assert_eq!(policy.warn.version, Version::V1(29));
        assert_eq!(policy.audit, LevelVersion::PRIVILEGED);

        let (policy, _) = Policy::from_labels(
            &labels(&[
                (ENFORCE_LEVEL_LABEL, "restricted"),
                (WARN_LEVEL_LABEL, "baseline"),
            ]),
            &Policy::default(),
        );
        assert_eq!(policy.warn, LevelVersion::latest(Level::Baseline));
    }

    #[test]
    fn invalid_labels_fail_closed_for_enforce_and_open_for_warn_and_audit() {
        let (policy, errors) = Policy::from_labels(
            &labels(&[
                (ENFORCE_LEVEL_LABEL, "strict"),
                (WARN_LEVEL_LABEL, "loud"),
                (AUDIT_VERSION_LABEL, "v2"),
            ]),
            &Policy::default(),
        );
        assert_eq!(policy.enforce, LevelVersion::latest(Level::Restricted));
        assert_eq!(policy.warn.level, Level::Privileged);
        let rendered: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.body()))
            .collect();
        assert_eq!(
            rendered,
            [
                "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": \
                 must be one of privileged, baseline, restricted",
                "metadata.labels[pod-security.kubernetes.io/audit-version]: Invalid value: \"v2\": \
                 must be \"latest\" or \"v1.x\"",
                "metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: \"loud\": \
                 must be one of privileged, baseline, restricted",
            ]
        );
    }
}
