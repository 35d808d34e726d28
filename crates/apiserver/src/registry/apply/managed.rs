//! `metadata.managedFields`: who owns which fields, how an apply changes that (conflicts,
//! forced takeover, removal of fields no longer applied), and how other writes do.

use capstan_api::{Error, FieldManagerConflict, Result};
use serde_json::{Map, Value};

use super::fieldpath::{path_string, FieldSet, PathElement};
use super::merge::{changed_fields, config_fields, existing_fields, merge, remove_path};
use super::schema::StructuralSchema;

/// The two operations Kubernetes records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply: the entry owns exactly the last applied configuration's fields.
    Apply,
    /// Any other write: the entry owns the fields its writes set or changed.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The field manager.
    pub manager: String,
    /// How it wrote.
    pub operation: Operation,
    /// The API version it wrote through.
    pub api_version: String,
    /// `status` for writes of the status subresource.
    pub subresource: Option<String>,
    /// When the entry last changed (RFC 3339).
    pub time: Option<String>,
    /// What it owns.
    pub fields: FieldSet,
}

impl Entry {
    /// Whether this entry is the one a write by `manager` with `operation` on `subresource`
    /// updates (an `Update` entry also matches on its API version, as in Kubernetes).
    fn is(
        &self,
        manager: &str,
        operation: Operation,
        api_version: &str,
        subresource: Option<&str>,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
            && (operation == Operation::Apply || self.api_version == api_version)
    }

    /// How a conflict names the manager: `"kubectl"`, plus ` using apps/v1` for `Update`.
    fn describe(&self) -> String {
        let name = Value::String(self.manager.clone()).to_string();
        match self.operation {
            Operation::Apply => name,
            Operation::Update => format!("{name} using {}", self.api_version),
        }
    }

    fn to_json(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("manager".into(), self.manager.clone().into());
        entry.insert("operation".into(), self.operation.as_str().into());
        entry.insert("apiVersion".into(), self.api_version.clone().into());
        if let Some(time) = &self.time {
            entry.insert("time".into(), time.clone().into());
        }
        entry.insert("fieldsType".into(), "FieldsV1".into());
        entry.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(subresource) = &self.subresource {
            entry.insert("subresource".into(), subresource.clone().into());
        }
        Value::Object(entry)
    }

    fn from_json(value: &Value) -> Option<Entry> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(String::from);
        let operation = match value.get("operation")?.as_str()? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        let fields = match value.get("fieldsV1") {
            Some(encoded) => FieldSet::from_fields_v1(encoded).ok()?,
            None => FieldSet::new(),
        };
        Some(Entry {
            manager: text("manager").unwrap_or_default(),
            operation,
            api_version: text("apiVersion").unwrap_or_default(),
            subresource: text("subresource").filter(|s| !s.is_empty()),
            time: text("time"),
            fields,
        })
    }
}

/// The entries of an object's `metadata.managedFields`; entries that cannot be read are
/// dropped, as Kubernetes resets unreadable managed fields.
pub(super) fn read(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Entry::from_json)
        .collect()
}

/// Writes `entries` as `object`'s `metadata.managedFields` (removing it when there are none),
/// dropping entries that own nothing.
pub(super) fn write(object: &mut Value, entries: &[Entry]) {
    let encoded: Vec<Value> = entries
        .iter()
        .filter(|entry| !entry.fields.is_empty())
        .map(Entry::to_json)
        .collect();
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if encoded.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert("managedFields".into(), Value::Array(encoded));
    }
}

/// The fields no manager owns: the type, and what the registry owns in `metadata`.
fn strip_untracked(set: &mut FieldSet) {
    set.remove_subtree(&PathElement::Field("apiVersion".into()));
    set.remove_subtree(&PathElement::Field("kind".into()));
    let metadata = PathElement::Field("metadata".into());
    if let Some(mut meta) = set.child(&metadata).cloned() {
        for field in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "selfLink",
            "managedFields",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove_subtree(&PathElement::Field(field.into()));
        }
        let owned_itself = set.contains(std::slice::from_ref(&metadata));
        set.remove_subtree(&metadata);
        if owned_itself {
            set.insert(std::slice::from_ref(&metadata));
        }
        for path in meta.paths() {
            let mut full = vec![metadata.clone()];
            full.extend(path);
            set.insert(&full);
        }
    }
}

/// Who applies, and how.
#[derive(Clone, Copy, Debug)]
pub struct Applier<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// The API version of the request (`apps/v1`).
    pub api_version: &'a str,
    /// Take contested fields from their owners instead of failing.
    pub force: bool,
    /// The time to record (RFC 3339).
    pub now: &'a str,
}

/// Server-side apply of `config` to `live` (`None`: the object does not exist yet): the
/// merged object with its new `managedFields`.
///
/// The applier's `Apply` entry afterwards owns exactly `config`'s fields. Fields it applied
/// before and no longer applies are removed from the object unless another manager owns them.
///
/// Errors: [`Error::ApplyConflict`] when, without `force`, `config` changes fields another
/// manager owns.
pub(super) fn apply(
    schema: &StructuralSchema,
    live: Option<&Value>,
    config: &Value,
    applier: &Applier<'_>,
) -> Result<Value> {
    let root = schema.root();
    let mut entries = live.map(read).unwrap_or_default();
    let mut merged = merge(schema, root, live, config);
    let mut applied = FieldSet::new();
    config_fields(
        schema,
        root,
        config,
        Some(&merged),
        &mut Vec::new(),
        &mut applied,
    );
    strip_untracked(&mut applied);
    let mut changed = FieldSet::new();
    changed_fields(schema, root, live, &merged, &mut Vec::new(), &mut changed);
    let contested = applied.intersection(&changed);
    let mine = |entry: &Entry| entry.is(applier.manager, Operation::Apply, "", None);

    let mut conflicts = Vec::new();
    for entry in entries.iter_mut().filter(|entry| !mine(entry)) {
        let taken = entry.fields.intersection(&contested);
        if taken.is_empty() {
            continue;
        }
        if applier.force {
            entry.fields = entry.fields.difference(&taken);
        } else {
            for path in taken.paths() {
                conflicts.push((entry.describe(), path_string(&path)));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(conflicts));
    }

    let previous = entries
        .iter()
        .find(|entry| mine(entry))
        .map(|entry| entry.fields.clone())
        .unwrap_or_default();
    let others = entries
        .iter()
        .filter(|entry| !mine(entry))
        .fold(FieldSet::new(), |all, entry| all.union(&entry.fields));
    for path in previous.difference(&applied).paths() {
        if !others.contains_prefix(&path) && !applied.contains_prefix(&path) {
            remove_path(schema, root, &mut merged, &path);
        }
    }

    let unchanged = previous == applied;
    let time = match entries.iter().find(|entry| mine(entry)) {
        Some(entry) if unchanged => entry.time.clone(),
        _ => Some(applier.now.to_string()),
    };
    let entry = Entry {
        manager: applier.manager.to_string(),
        operation: Operation::Apply,
        api_version: applier.api_version.to_string(),
        subresource: None,
        time,
        fields: applied,
    };
    match entries.iter_mut().find(|entry| mine(entry)) {
        Some(existing) => *existing = entry,
        None => entries.push(entry),
    }
    keep_existing(schema, &merged, &mut entries);
    write(&mut merged, &entries);
    Ok(merged)
}

/// Records a write other than apply: `after`'s entries (the client's own `managedFields`
/// when it changed them, else `before`'s) lose the fields this write set or changed, which the
/// `Update` entry of `manager` gains (no entry without a manager). Ownership of fields that
/// no longer exist is dropped.
pub(super) fn record_update(
    schema: &StructuralSchema,
    before: Option<&Value>,
    after: &mut Value,
    manager: Option<&str>,
    api_version: &str,
    subresource: Option<&str>,
    now: &str,
) {
    let root = schema.root();
    let previous = before.map(read).unwrap_or_default();
    let sent = after.pointer("/metadata/managedFields");
    let kept = before.and_then(|b| b.pointer("/metadata/managedFields"));
    let mut entries = match sent {
        Some(sent) if Some(sent) != kept => read(after),
        _ => previous,
    };
    let mut changed = FieldSet::new();
    changed_fields(schema, root, before, after, &mut Vec::new(), &mut changed);
    strip_untracked(&mut changed);
    if !changed.is_empty() {
        for entry in &mut entries {
            entry.fields = entry.fields.difference(&changed);
        }
        if let Some(manager) = manager {
            let found = entries
                .iter_mut()
                .find(|entry| entry.is(manager, Operation::Update, api_version, subresource));
            match found {
                Some(entry) => {
                    entry.fields = entry.fields.union(&changed);
                    entry.time = Some(now.to_string());
                }
                None => entries.push(Entry {
                    manager: manager.to_string(),
                    operation: Operation::Update,
                    api_version: api_version.to_string(),
                    subresource: subresource.map(String::from),
                    time: Some(now.to_string()),
                    fields: changed,
                }),
            }
        }
    }
    keep_existing(schema, after, &mut entries);
    write(after, &entries);
}

/// Drops ownership of paths `object` does not have.
fn keep_existing(schema: &StructuralSchema, object: &Value, entries: &mut [Entry]) {
    let mut existing = FieldSet::new();
    existing_fields(
        schema,
        schema.root(),
        object,
        &mut Vec::new(),
        &mut existing,
    );
    for entry in entries {
        entry.fields = entry.fields.intersection(&existing);
    }
}

/// kube-apiserver's apply conflict: one conflict reads `Apply failed with 1 conflict:
/// conflict with "m" using v1: .spec.x`; several are grouped by manager, sorted, one `- path`
/// line each.
fn conflict_error(conflicts: Vec<(String, String)>) -> Error {
    let message = match conflicts.as_slice() {
        [(manager, path)] => {
            format!("Apply failed with 1 conflict: conflict with {manager}: {path}")
        }
        _ => {
            let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
            managers.sort();
            managers.dedup();
            let mut lines = Vec::new();
            for manager in managers {
                lines.push(format!("conflicts with {manager}:"));
                for (_, path) in conflicts.iter().filter(|(m, _)| m == manager) {
                    lines.push(format!("- {path}"));
                }
            }
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        }
    };
    Error::ApplyConflict {
        message,
        conflicts: conflicts
            .into_iter()
            .map(|(manager, field)| FieldManagerConflict {
                field,
                message: format!("conflict with {manager}"),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::ResourceInfo;
    use serde_json::json;

    fn schema() -> std::sync::Arc<StructuralSchema> {
        StructuralSchema::builtin(&ResourceInfo::builtin("apps", "Deployment").unwrap()).unwrap()
    }

    fn applier(manager: &str, force: bool) -> Applier<'_> {
        Applier {
            manager,
            api_version: "apps/v1",
            force,
            now: "2024-01-01T00:00:00Z",
        }
    }

    fn deployment(replicas: i64, containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn an_apply_records_an_apply_entry_owning_exactly_its_fields() {
        let config = deployment(2, json!([{"name": "web", "image": "nginx"}]));
        let applied = apply(&schema(), None, &config, &applier("mgr", false)).unwrap();
        let entries = &applied["metadata"]["managedFields"];
        assert_eq!(entries[0]["manager"], "mgr");
        assert_eq!(entries[0]["operation"], "Apply");
        assert_eq!(entries[0]["fieldsType"], "FieldsV1");
        assert_eq!(
            entries[0]["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
    }

    #[test]
    fn a_second_manager_applying_a_field_owned_by_another_conflicts() {
        let first = apply(
            &schema(),
            None,
            &deployment(2, json!([])),
            &applier("a", false),
        )
        .unwrap();
        let error = apply(
            &schema(),
            Some(&first),
            &deployment(3, json!([])),
            &applier("b", false),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"Apply failed with 1 conflict: conflict with "a": .spec.replicas"#
        );
        assert_eq!(error.code(), 409);
    }

    #[test]
    fn the_same_value_is_shared_and_force_takes_a_field_over() {
        let first = apply(
            &schema(),
            None,
            &deployment(2, json!([{"name": "web", "image": "nginx"}])),
            &applier("a", false),
        )
        .unwrap();
        let shared = apply(
            &schema(),
            Some(&first),
            &deployment(2, json!([{"name": "web", "image": "nginx"}])),
            &applier("b", false),
        );
        assert!(shared.is_ok());
        let forced = apply(
            &schema(),
            Some(&first),
            &deployment(5, json!([{"name": "web", "image": "nginx"}])),
            &applier("b", true),
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        let entries = read(&forced);
        let a = entries.iter().find(|e| e.manager == "a").unwrap();
        assert!(!a.fields.contains_prefix(&[
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into())
        ]));
    }

    #[test]
    fn two_managers_own_different_containers_and_removal_spares_the_other() {
        let web = deployment(1, json!([{"name": "web", "image": "nginx"}]));
        let one = apply(&schema(), None, &web, &applier("a", false)).unwrap();
        let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "envoy"}]}}}});
        let two = apply(&schema(), Some(&one), &sidecar, &applier("b", false)).unwrap();
        assert_eq!(
            two["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        // `a` stops applying its container and replicas: both go; `b`'s container stays.
        let bare =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        let three = apply(&schema(), Some(&two), &bare, &applier("a", false)).unwrap();
        assert_eq!(
            three["spec"]["template"]["spec"]["containers"],
            json!([{"name": "sidecar", "image": "envoy"}])
        );
        assert!(three["spec"].get("replicas").is_none());
    }

    #[test]
    fn an_update_takes_the_fields_it_changed_from_their_owner() {
        let applied = apply(
            &schema(),
            None,
            &deployment(2, json!([{"name": "web", "image": "nginx"}])),
            &applier("a", false),
        )
        .unwrap();
        let mut scaled = applied.clone();
        scaled["spec"]["replicas"] = json!(4);
        record_update(
            &schema(),
            Some(&applied),
            &mut scaled,
            Some("kubectl"),
            "apps/v1",
            None,
            "t",
        );
        let entries = read(&scaled);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].manager, "kubectl");
        assert_eq!(
            entries[1].fields.to_fields_v1(),
            json!({"f:spec": {"f:replicas": {}}})
        );
        let error = apply(
            &schema(),
            Some(&scaled),
            &deployment(2, json!([{"name": "web", "image": "nginx"}])),
            &applier("a", false),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"Apply failed with 1 conflict: conflict with "kubectl" using apps/v1: .spec.replicas"#
        );
    }

    #[test]
    fn several_conflicts_are_grouped_by_manager() {
        let error = conflict_error(vec![
            ("\"b\"".into(), ".spec.x".into()),
            ("\"a\"".into(), ".spec.y".into()),
        ]);
        assert_eq!(
            error.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.y\nconflicts with \"b\":\n- .spec.x"
        );
    }
}
