//! Field paths and field sets, and their `FieldsV1` encoding.
//!
//! A [`FieldSet`] is a tree of [`PathElement`]s: each node holds the elements that are owned
//! themselves (`members`) and the elements below which something is owned (`children`). The
//! `FieldsV1` encoding is Kubernetes': `f:<name>` for a field, `k:<json>` for a list-map
//! element (its key fields as a JSON object, keys sorted), `v:<json>` for a set element,
//! `i:<index>` for a list position, and `.` inside an element's entry when the element itself
//! is owned as well as fields below it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// One step of a path into an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of a struct or a key of a map.
    Field(String),
    /// A list-map element, named by its key fields: the compact JSON object of them, with its
    /// keys sorted (`{"containerPort":80,"protocol":"TCP"}`).
    Key(String),
    /// A set element, named by its compact JSON value.
    Value(String),
    /// A list element by position (lists that are neither sets nor maps).
    Index(usize),
}

impl PathElement {
    /// The element of a list-map item with these key fields.
    pub fn key(fields: &Map<String, Value>) -> PathElement {
        let sorted: BTreeMap<&String, &Value> = fields.iter().collect();
        PathElement::Key(serde_json::to_string(&sorted).unwrap_or_default())
    }

    /// The element of a set item.
    pub fn value(value: &Value) -> PathElement {
        PathElement::Value(value.to_string())
    }

    /// The `FieldsV1` key: `f:name`, `k:{...}`, `v:...` or `i:0`.
    fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(key) => format!("k:{key}"),
            PathElement::Value(value) => format!("v:{value}"),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    fn decode(encoded: &str) -> Option<PathElement> {
        let (prefix, rest) = encoded.split_once(':')?;
        match prefix {
            "f" => Some(PathElement::Field(rest.to_string())),
            "k" => {
                let fields: Map<String, Value> = serde_json::from_str(rest).ok()?;
                Some(PathElement::key(&fields))
            }
            "v" => {
                let value: Value = serde_json::from_str(rest).ok()?;
                Some(PathElement::value(&value))
            }
            "i" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }
}

/// Writes `path` as Kubernetes prints field paths in conflicts: `.spec.replicas`,
/// `.spec.containers[name="web"].image`, `.metadata.finalizers[="a"]`, `.args[0]`.
pub fn path_string(path: &[PathElement]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            PathElement::Field(name) => {
                let _ = write!(out, ".{name}");
            }
            PathElement::Key(key) => {
                let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = write!(out, "[{}]", parts.join(","));
            }
            PathElement::Value(value) => {
                let _ = write!(out, "[={value}]");
            }
            PathElement::Index(index) => {
                let _ = write!(out, "[{index}]");
            }
        }
    }
    out
}

/// A set of field paths, as a tree; see the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    /// Whether the set holds no path.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds `path` (a non-empty path; an empty one is ignored).
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether `path` itself is in the set.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// Whether `path` or any path below it is in the set.
    pub fn contains_prefix(&self, path: &[PathElement]) -> bool {
        match path {
            [] => !self.is_empty(),
            [last] => {
                self.members.contains(last)
                    || self.children.get(last).is_some_and(|c| !c.is_empty())
            }
            [first, rest @ ..] => self
                .children
                .get(first)
                .is_some_and(|c| c.contains_prefix(rest)),
        }
    }

    /// The subset below `element`, if any.
    pub fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// Removes `element` and everything below it from this level.
    pub fn remove_subtree(&mut self, element: &PathElement) {
        self.members.remove(element);
        self.children.remove(element);
    }

    /// The paths in `self` or `other`.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut result = self.clone();
        result.members.extend(other.members.iter().cloned());
        for (element, child) in &other.children {
            let merged = match result.children.get(element) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            result.children.insert(element.clone(), merged);
        }
        result
    }

    /// The paths in `self` and not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .map(|(element, child)| match other.children.get(element) {
                Some(theirs) => (element.clone(), child.difference(theirs)),
                None => (element.clone(), child.clone()),
            })
            .filter(|(_, child)| !child.is_empty())
            .collect();
        FieldSet { members, children }
    }

    /// The paths in both `self` and `other`.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(element, child)| {
                let theirs = other.children.get(element)?;
                let both = child.intersection(theirs);
                (!both.is_empty()).then(|| (element.clone(), both))
            })
            .collect();
        FieldSet { members, children }
    }

    /// Every path in the set, parents before the paths below them.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        let elements: BTreeSet<&PathElement> =
            self.members.iter().chain(self.children.keys()).collect();
        for element in elements {
            prefix.push(element.clone());
            if self.members.contains(element) {
                out.push(prefix.clone());
            }
            if let Some(child) = self.children.get(element) {
                child.collect_paths(prefix, out);
            }
            prefix.pop();
        }
    }

    /// The `FieldsV1` encoding of the set.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        let elements: BTreeSet<&PathElement> =
            self.members.iter().chain(self.children.keys()).collect();
        for element in elements {
            let child = self.children.get(element).filter(|c| !c.is_empty());
            let mut encoded = match child {
                Some(child) => child.to_fields_v1(),
                None => Value::Object(Map::new()),
            };
            if child.is_some() && self.members.contains(element) {
                if let Value::Object(inner) = &mut encoded {
                    inner.insert(".".into(), Value::Object(Map::new()));
                }
            }
            map.insert(element.encode(), encoded);
        }
        Value::Object(map)
    }

    /// Reads a `FieldsV1` value. Errors: a description of the first key or value that is not
    /// `FieldsV1`.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, String> {
        let Value::Object(map) = value else {
            return Err(format!("expected an object, got {value}"));
        };
        let mut set = FieldSet::new();
        for (key, inner) in map {
            if key == "." {
                continue;
            }
            let element = PathElement::decode(key)
                .ok_or_else(|| format!("{key:?} is not a FieldsV1 path element"))?;
            let Value::Object(inner_map) = inner else {
                return Err(format!("the value of {key:?} is not an object"));
            };
            if inner_map.is_empty() || inner_map.contains_key(".") {
                set.members.insert(element.clone());
            }
            let child = FieldSet::from_fields_v1(inner)?;
            if !child.is_empty() {
                set.children.insert(element, child);
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    fn container(name: &str) -> PathElement {
        PathElement::key(json!({ "name": name }).as_object().unwrap())
    }

    #[test]
    fn a_set_encodes_as_kubernetes_fields_v1_and_reads_back() {
        let mut set = FieldSet::new();
        set.insert(&[field("spec"), field("replicas")]);
        set.insert(&[field("spec"), field("containers"), container("web")]);
        set.insert(&[
            field("spec"),
            field("containers"),
            container("web"),
            field("image"),
        ]);
        set.insert(&[
            field("metadata"),
            field("finalizers"),
            PathElement::value(&json!("a")),
        ]);
        let encoded = set.to_fields_v1();
        assert_eq!(
            encoded,
            json!({
                "f:metadata": {"f:finalizers": {"v:\"a\"": {}}},
                "f:spec": {
                    "f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}},
                    "f:replicas": {}
                }
            })
        );
        assert_eq!(FieldSet::from_fields_v1(&encoded).unwrap(), set);
    }

    #[test]
    fn list_map_keys_are_written_with_their_fields_sorted() {
        let key = PathElement::key(
            json!({"protocol": "TCP", "containerPort": 80})
                .as_object()
                .unwrap(),
        );
        assert_eq!(key.encode(), r#"k:{"containerPort":80,"protocol":"TCP"}"#);
        assert_eq!(
            path_string(&[field("spec"), field("ports"), key]),
            r#".spec.ports[containerPort=80,protocol="TCP"]"#
        );
    }

    #[test]
    fn difference_and_intersection_work_level_by_level() {
        let mut a = FieldSet::new();
        a.insert(&[field("spec"), field("replicas")]);
        a.insert(&[field("spec"), field("paused")]);
        let mut b = FieldSet::new();
        b.insert(&[field("spec"), field("replicas")]);
        assert_eq!(
            a.difference(&b).paths(),
            vec![vec![field("spec"), field("paused")]]
        );
        assert_eq!(a.intersection(&b), b);
        assert!(b.difference(&a).is_empty());
        assert!(a.contains_prefix(&[field("spec")]));
        assert!(!a.contains(&[field("spec")]));
    }

    #[test]
    fn malformed_fields_v1_is_refused() {
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
    }
}
