//! Which registered controllers run: kube-controller-manager's `--controllers` list.
//!
//! The list is a sequence of entries, comma-separated on the command line:
//!
//! | entry | meaning |
//! |---|---|
//! | `*` | every controller not named otherwise is on (all are on by default) |
//! | `name` | `name` is on |
//! | `-name` | `name` is off |
//!
//! A controller is on when the first entry naming it (by its name or an alias) says `name`,
//! off when it says `-name`; a controller no entry names is on only when the list has `*`.
//! The empty list means `*`. So `*,-job-controller` runs everything but the Job controller,
//! and `replicaset-controller,deployment-controller` runs only those two.
//!
//! Parsing ([`ControllerSelection::parse`]) checks only the syntax; the names are checked
//! against the controllers a manager knows ([`ControllerSelection::validate`]), and an unknown
//! one is [`SelectionError::Unknown`], which lists the known names.

use std::fmt;
use std::str::FromStr;

/// Why a `--controllers` list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// An entry is empty (`a,,b`) or only a dash (`-`).
    #[error("--controllers: empty controller name in {entry:?}")]
    Empty {
        /// The entry as written.
        entry: String,
    },
    /// An entry names no controller the manager knows, by name or alias.
    #[error("--controllers: {name:?} is not a known controller; known controllers: {}", known.join(", "))]
    Unknown {
        /// The unknown name (without its `-`).
        name: String,
        /// Every name the manager knows, sorted.
        known: Vec<String>,
    },
}

/// One entry of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// `*`.
    AllByDefault,
    /// `name`.
    Enable(String),
    /// `-name`.
    Disable(String),
}

/// A parsed `--controllers` list; see the [module docs](self). The default is `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerSelection {
    entries: Vec<Entry>,
}

impl Default for ControllerSelection {
    fn default() -> Self {
        ControllerSelection::all()
    }
}

impl ControllerSelection {
    /// `*`: every controller.
    pub fn all() -> Self {
        ControllerSelection {
            entries: vec![Entry::AllByDefault],
        }
    }

    /// Parses the list's entries (surrounding spaces trimmed); no entry at all means `*`.
    ///
    /// Errors: [`SelectionError::Empty`] for an empty entry or a lone `-`.
    pub fn parse<I, S>(entries: I) -> Result<Self, SelectionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut parsed = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            let parsed_entry = match entry {
                "*" => Entry::AllByDefault,
                _ => match entry.strip_prefix('-') {
                    Some(name) => Entry::Disable(name.to_string()),
                    None => Entry::Enable(entry.to_string()),
                },
            };
            if matches!(&parsed_entry, Entry::Enable(name) | Entry::Disable(name) if name.is_empty())
            {
                return Err(SelectionError::Empty {
                    entry: entry.to_string(),
                });
            }
            parsed.push(parsed_entry);
        }
        if parsed.is_empty() {
            return Ok(ControllerSelection::all());
        }
        Ok(ControllerSelection { entries: parsed })
    }

    /// Checks that every name the list mentions is one of `known` (names and aliases).
    ///
    /// Errors: [`SelectionError::Unknown`] for the first name that is not, with `known`
    /// sorted in the message.
    pub fn validate<'a>(
        &self,
        known: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), SelectionError> {
        for entry in &self.entries {
            let (Entry::Enable(name) | Entry::Disable(name)) = entry else {
                continue;
            };
            if !known.clone().into_iter().any(|k| k == name) {
                let mut known: Vec<String> = known.into_iter().map(str::to_string).collect();
                known.sort();
                known.dedup();
                return Err(SelectionError::Unknown {
                    name: name.clone(),
                    known,
                });
            }
        }
        Ok(())
    }

    /// Whether the controller called `name` (or any of `aliases`) is on.
    pub fn is_enabled(&self, name: &str, aliases: &[&str]) -> bool {
        let is_it = |entry_name: &str| entry_name == name || aliases.contains(&entry_name);
        for entry in &self.entries {
            match entry {
                Entry::Enable(entry_name) if is_it(entry_name) => return true,
                Entry::Disable(entry_name) if is_it(entry_name) => return false,
                _ => {}
            }
        }
        self.entries.contains(&Entry::AllByDefault)
    }
}

impl FromStr for ControllerSelection {
    type Err = SelectionError;

    /// Parses a comma-separated list, as `--controllers` takes it; `""` means `*`.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        if list.trim().is_empty() {
            return Ok(ControllerSelection::all());
        }
        ControllerSelection::parse(list.split(','))
    }
}

impl fmt::Display for ControllerSelection {
    /// The comma-separated list, as `--controllers` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self
            .entries
            .iter()
            .map(|entry| match entry {
                Entry::AllByDefault => "*".to_string(),
                Entry::Enable(name) => name.clone(),
                Entry::Disable(name) => format!("-{name}"),
            })
            .collect();
        f.write_str(&entries.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [&str; 3] = ["job-controller", "replicaset-controller", "replicaset"];

    fn selection(list: &str) -> ControllerSelection {
        list.parse().unwrap()
    }

    #[test]
    fn the_empty_list_and_the_star_enable_everything() {
        for list in ["", " ", "*"] {
            let selection = selection(list);
            assert_eq!(selection, ControllerSelection::all());
            assert!(selection.is_enabled("job-controller", &[]));
        }
        assert_eq!(
            ControllerSelection::parse(Vec::<String>::new()).unwrap(),
            ControllerSelection::all()
        );
        assert_eq!(ControllerSelection::default().to_string(), "*");
    }

    #[test]
    fn a_name_enables_only_the_controllers_listed() {
        let selection = selection("replicaset-controller");
        assert!(selection.is_enabled("replicaset-controller", &["replicaset"]));
        assert!(!selection.is_enabled("job-controller", &["job"]));
    }

    #[test]
    fn a_dash_disables_a_controller_the_star_would_enable() {
        let selection = selection("*,-job-controller");
        assert!(!selection.is_enabled("job-controller", &["job"]));
        assert!(selection.is_enabled("replicaset-controller", &[]));
    }

    #[test]
    fn the_first_entry_naming_a_controller_wins() {
        assert!(selection("job-controller,-job-controller").is_enabled("job-controller", &[]));
        assert!(!selection("-job-controller,job-controller").is_enabled("job-controller", &[]));
    }

    #[test]
    fn aliases_select_like_names() {
        let selection = selection("*,-replicaset");
        assert!(!selection.is_enabled("replicaset-controller", &["replicaset"]));
        assert!(selection.validate(KNOWN).is_ok());
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_names() {
        let error = selection("*,-jobs").validate(KNOWN).unwrap_err();
        assert_eq!(
            error,
            SelectionError::Unknown {
                name: "jobs".into(),
                known: vec![
                    "job-controller".into(),
                    "replicaset".into(),
                    "replicaset-controller".into()
                ],
            }
        );
        let message = error.to_string();
        assert!(
            message.contains("\"jobs\" is not a known controller"),
            "{message}"
        );
        assert!(message.contains("job-controller, replicaset"), "{message}");
    }

    #[test]
    fn empty_entries_are_refused() {
        assert!(matches!(
            "a,,b".parse::<ControllerSelection>(),
            Err(SelectionError::Empty { .. })
        ));
        assert!(matches!(
            "-".parse::<ControllerSelection>(),
            Err(SelectionError::Empty { .. })
        ));
    }

    #[test]
    fn the_list_prints_as_it_parses() {
        let list = "*,-job-controller,replicaset";
        assert_eq!(selection(list).to_string(), list);
    }
}
