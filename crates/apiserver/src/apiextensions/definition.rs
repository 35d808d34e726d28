//! A CustomResourceDefinition read into what serving it takes: names, scope, and per version
//! its schema, subresources and printer columns; and the checks a CRD gets when written.

use std::sync::Arc;

use capstan_api::{resource::PrinterColumn, FieldError, ResourceInfo, Subresources};
use serde_json::Value;

use super::cel_rules::Rules;
use super::scale::ScalePaths;
use super::strategy::CustomResourceStrategy;
use super::structural;

/// The finalizer kube-apiserver keeps on a CRD until its instances are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The names a CRD asks for (`spec.names`), or was granted (`status.acceptedNames`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// `plural`, e.g. `widgets`.
    pub plural: String,
    /// `singular`; the lowercase kind when empty.
    pub singular: String,
    /// `kind`, e.g. `Widget`.
    pub kind: String,
    /// `listKind`; `<kind>List` when empty.
    pub list_kind: String,
    /// `shortNames`.
    pub short_names: Vec<String>,
    /// `categories`.
    pub categories: Vec<String>,
}

impl Names {
    /// Reads `names` (a CRD's `spec.names` or `status.acceptedNames`), filling the defaults.
    pub fn from_json(names: &Value) -> Names {
        let text = |key: &str| names[key].as_str().unwrap_or_default().to_string();
        let list = |key: &str| -> Vec<String> {
            names[key]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        let kind = text("kind");
        let mut singular = text("singular");
        if singular.is_empty() {
            singular = kind.to_ascii_lowercase();
        }
        let mut list_kind = text("listKind");
        if list_kind.is_empty() && !kind.is_empty() {
            list_kind = format!("{kind}List");
        }
        Names {
            plural: text("plural"),
            singular,
            kind,
            list_kind,
            short_names: list("shortNames"),
            categories: list("categories"),
        }
    }

    /// The names as `status.acceptedNames` carries them.
    pub fn to_json(&self) -> Value {
        let mut names = serde_json::json!({
            "plural": self.plural,
            "singular": self.singular,
            "kind": self.kind,
            "listKind": self.list_kind,
        });
        if !self.short_names.is_empty() {
            names["shortNames"] = self.short_names.clone().into();
        }
        if !self.categories.is_empty() {
            names["categories"] = self.categories.clone().into();
        }
        names
    }
}

/// One entry of `spec.versions`.
#[derive(Clone, Debug)]
pub struct Version {
    /// `name`, e.g. `v1`.
    pub name: String,
    /// Whether it is served.
    pub served: bool,
    /// Whether objects are stored in it.
    pub storage: bool,
    /// `schema.openAPIV3Schema`, if any.
    pub schema: Option<Value>,
    /// Whether `subresources.status` is set.
    pub status: bool,
    /// `subresources.scale`, if set.
    pub scale: Option<ScalePaths>,
    /// `additionalPrinterColumns`.
    pub columns: Vec<PrinterColumn>,
}

/// A CustomResourceDefinition as far as serving it goes.
#[derive(Clone, Debug)]
pub struct Definition {
    /// `metadata.name`: `<plural>.<group>`.
    pub name: String,
    /// `spec.group`.
    pub group: String,
    /// `spec.names`, defaulted.
    pub names: Names,
    /// `spec.scope == Namespaced`.
    pub namespaced: bool,
    /// `spec.versions`, in order.
    pub versions: Vec<Version>,
    /// `spec.conversion.strategy == Webhook`.
    pub conversion_webhook: bool,
}

impl Definition {
    /// Reads a CRD's JSON.
    pub fn from_json(crd: &Value) -> Definition {
        let spec = &crd["spec"];
        let versions = spec["versions"]
            .as_array()
            .map(|versions| versions.iter().map(read_version).collect())
            .unwrap_or_default();
        Definition {
            name: crd["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            group: spec["group"].as_str().unwrap_or_default().to_string(),
            names: Names::from_json(&spec["names"]),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            versions,
            conversion_webhook: spec["conversion"]["strategy"].as_str() == Some("Webhook"),
        }
    }

    /// The version objects are stored in.
    pub fn storage_version(&self) -> Option<&Version> {
        self.versions.iter().find(|v| v.storage)
    }

    /// The storage location every version shares: `<group>/<plural>`.
    pub fn storage_resource(&self) -> String {
        format!("{}/{}", self.group, self.names.plural)
    }

    /// One kind description and strategy per served version, under `names` (the accepted
    /// ones).
    ///
    /// Errors: the schema rules that do not compile (a CRD stored before they were checked).
    pub fn served_kinds(
        &self,
        names: &Names,
    ) -> Result<Vec<(ResourceInfo, Arc<CustomResourceStrategy>)>, String> {
        let storage_version = self
            .storage_version()
            .map(|v| v.name.clone())
            .unwrap_or_default();
        let storage_api_version = format!("{}/{storage_version}", self.group);
        self.versions
            .iter()
            .filter(|version| version.served)
            .map(|version| {
                let info = ResourceInfo::new(
                    &self.group,
                    &version.name,
                    &names.kind,
                    &names.plural,
                    self.namespaced,
                )
                .with_singular(names.singular.clone())
                .with_short_names(names.short_names.clone())
                .with_categories(names.categories.clone())
                .with_subresources(Subresources {
                    status: version.status,
                    scale: version.scale.is_some(),
                })
                .with_field_labels(Vec::<String>::new())
                .with_printer_columns(version.columns.clone())
                .with_storage_resource(self.storage_resource());
                let rules = match &version.schema {
                    Some(schema) => {
                        Some(Rules::compile(schema, "openAPIV3Schema").map_err(|errors| {
                            errors
                                .iter()
                                .map(|e| format!("{}: {}", e.path, e.message))
                                .collect::<Vec<_>>()
                                .join("; ")
                        })?)
                    }
                    None => None,
                };
                let strategy = CustomResourceStrategy::new(
                    info.clone(),
                    version.schema.clone(),
                    rules,
                    version.scale.clone(),
                    storage_api_version.clone(),
                    self.conversion_webhook,
                );
                Ok((info, Arc::new(strategy)))
            })
            .collect()
    }
}

fn read_version(version: &Value) -> Version {
    let columns = version["additionalPrinterColumns"]
        .as_array()
        .map(|columns| {
            columns
                .iter()
                .map(|column| {
                    let text = |key: &str| column[key].as_str().unwrap_or_default().to_string();
                    PrinterColumn {
                        name: text("name"),
                        type_: text("type"),
                        format: text("format"),
                        description: text("description"),
                        priority: column["priority"].as_i64().unwrap_or(0) as i32,
                        json_path: text("jsonPath"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let subresources = &version["subresources"];
    // kube-apiserver serves an Age column when a version names none.
    let columns = if Vec::is_empty(&columns) {
        vec![PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
            json_path: ".metadata.creationTimestamp".into(),
            ..PrinterColumn::default()
        }]
    } else {
        columns
    };
    Version {
        name: version["name"].as_str().unwrap_or_default().to_string(),
        served: version["served"].as_bool().unwrap_or(false),
        storage: version["storage"].as_bool().unwrap_or(false),
        schema: version["schema"]
            .get("openAPIV3Schema")
            .filter(|s| s.is_object())
            .cloned(),
        status: subresources.get("status").is_some_and(Value::is_object),
        scale: subresources
            .get("scale")
            .filter(|s| s.is_object())
            .map(ScalePaths::from_json),
        columns,
    }
}

/// The problems of a CRD being written, as kube-apiserver's CRD validation names them (the
/// subset that serving relies on): names, scope, versions, conversion and schemas.
pub(crate) fn validate_definition(crd: &Value, causes: &mut Vec<FieldError>) {
    let definition = Definition::from_json(crd);
    let spec = &crd["spec"];
    if definition.group.is_empty() {
        causes.push(FieldError::required("spec.group", ""));
    }
    for (key, value) in [
        ("plural", &definition.names.plural),
        ("kind", &definition.names.kind),
    ] {
        if value.is_empty() {
            causes.push(FieldError::required(format!("spec.names.{key}"), ""));
        }
    }
    let expected = format!("{}.{}", definition.names.plural, definition.group);
    if !definition.names.plural.is_empty()
        && !definition.group.is_empty()
        && definition.name != expected
    {
        causes.push(FieldError::invalid(
            "metadata.name",
            definition.name.clone(),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        Some(other) => causes.push(FieldError::not_supported(
            "spec.scope",
            other,
            ["Cluster", "Namespaced"],
        )),
        None => causes.push(FieldError::required("spec.scope", "")),
    }
    if definition.versions.is_empty() {
        causes.push(FieldError::invalid(
            "spec.versions",
            Value::Array(Vec::new()),
            "must have exactly one version marked as storage version",
        ));
    } else if definition.versions.iter().filter(|v| v.storage).count() != 1 {
        let shown = spec["versions"].clone();
        causes.push(FieldError::invalid(
            "spec.versions",
            shown,
            "must have exactly one version marked as storage version",
        ));
    }
    if let Some(strategy) = spec["conversion"]["strategy"].as_str() {
        if strategy != "None" {
            causes.push(FieldError::not_supported(
                "spec.conversion.strategy",
                strategy,
                ["None"],
            ));
        }
    }
    for (i, version) in definition.versions.iter().enumerate() {
        let Some(schema) = &version.schema else {
            continue;
        };
        let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            causes.push(FieldError::required(
                format!("{path}.type"),
                "must be object at the root",
            ));
        }
        structural::check_patterns(schema, &path, causes);
        if let Err(errors) = Rules::compile(schema, &path) {
            for error in errors {
                causes.push(FieldError::invalid(
                    error.path,
                    error.rule,
                    format!("compilation failed: {}", error.message),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object"}},
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                     "additionalPrinterColumns": [{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]},
                    {"name": "v2", "served": true, "storage": false},
                    {"name": "v0", "served": false, "storage": false},
                ],
            },
        })
    }

    #[test]
    fn every_served_version_becomes_a_kind_sharing_the_storage_version_s_location() {
        let definition = Definition::from_json(&crd());
        let kinds = definition.served_kinds(&definition.names).unwrap();
        let versions: Vec<&str> = kinds.iter().map(|(info, _)| info.version()).collect();
        assert_eq!(versions, ["v1", "v2"]);
        let (v1, _) = &kinds[0];
        assert_eq!(v1.storage_resource(), "example.com/widgets");
        assert_eq!(kinds[1].0.storage_resource(), "example.com/widgets");
        assert_eq!(v1.short_names(), ["wd"]);
        assert_eq!(v1.categories(), ["all"]);
        assert_eq!(v1.singular(), "widget");
        assert!(v1.subresources().status && v1.subresources().scale);
        assert!(!kinds[1].0.subresources().status);
        assert_eq!(v1.printer_columns()[0].json_path, ".spec.replicas");
        assert_eq!(kinds[1].0.printer_columns()[0].name, "Age");
    }

    #[test]
    fn a_valid_definition_has_no_problems() {
        let mut causes = Vec::new();
        validate_definition(&crd(), &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn webhook_conversion_two_storage_versions_and_a_wrong_name_are_refused() {
        let mut crd = crd();
        crd["metadata"]["name"] = "gadgets.example.com".into();
        crd["spec"]["versions"][1]["storage"] = true.into();
        crd["spec"]["conversion"] = json!({"strategy": "Webhook"});
        let mut causes = Vec::new();
        validate_definition(&crd, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["metadata.name", "spec.versions", "spec.conversion.strategy"]
        );
        assert_eq!(
            causes[2].to_string(),
            r#"spec.conversion.strategy: Unsupported value: "Webhook": supported values: "None""#
        );
    }
}
