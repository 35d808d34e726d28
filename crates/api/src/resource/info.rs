//! [`ResourceInfo`], the runtime description of a kind (names, scope, subresources, field
//! labels), and its storage keys.

use kube_core::{discovery::ApiResource, GroupVersionKind};

use super::builtins::{BuiltIn, BUILT_INS};
use super::storage::{storage_resource, validate_path_segment};
use super::{Resource, REGISTRY_ROOT};
use crate::error::{Error, Result};

/// Which subresources a kind serves besides the main resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Subresources {
    /// `/status`: status is written only through `update_status`.
    pub status: bool,
    /// `/scale`: the kind exposes an `autoscaling/v1` `Scale`.
    pub scale: bool,
}

/// One column a kind adds to its tables (`kubectl get`), as a CustomResourceDefinition's
/// `additionalPrinterColumns` describes it: the value is read at `json_path` from each object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrinterColumn {
    /// The column's header, e.g. `Replicas`.
    pub name: String,
    /// The OpenAPI type of the value: `integer`, `number`, `string`, `boolean` or `date`.
    pub type_: String,
    /// An OpenAPI format hint (`int32`, `date-time`, `name`, ...); empty for none.
    pub format: String,
    /// A human-readable description of the column.
    pub description: String,
    /// 0 for the default table; higher priorities are shown only with `-o wide`.
    pub priority: i32,
    /// A simple JSONPath into each object, e.g. `.spec.replicas`.
    pub json_path: String,
}

/// Runtime description of a kind: names, scope, subresources, field labels and storage
/// location.
///
/// Build one with [`ResourceInfo::of`] for a typed kind, [`ResourceInfo::new`] for a kind known
/// by name, or [`ResourceInfo::builtin`] to look up a Kubernetes built-in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceInfo {
    group: String,
    version: String,
    kind: String,
    plural: String,
    singular: String,
    namespaced: bool,
    short_names: Vec<String>,
    subresources: Subresources,
    field_labels: Vec<String>,
    categories: Vec<String>,
    printer_columns: Vec<PrinterColumn>,
    storage_resource: String,
}

impl ResourceInfo {
    /// Describes a kind. For a Kubernetes built-in (matched on group and kind) the singular,
    /// short names, subresources and field labels come from the built-in table; otherwise the
    /// singular is the lowercase kind, the status subresource is on, and there are no short
    /// names, scale subresource or extra field labels.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        let builtin = BUILT_INS
            .iter()
            .find(|b| b.group == group && b.kind == kind);
        let to_strings = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        ResourceInfo {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            short_names: builtin
                .map(|b| to_strings(b.short_names))
                .unwrap_or_default(),
            subresources: builtin.map(|b| b.subresources).unwrap_or(Subresources {
                status: true,
                scale: false,
            }),
            field_labels: builtin
                .map(|b| to_strings(b.field_labels))
                .unwrap_or_default(),
            categories: builtin
                .map(|b| to_strings(b.categories))
                .unwrap_or_default(),
            printer_columns: Vec::new(),
            storage_resource: storage_resource(group, plural),
        }
    }

    /// The description of the typed kind `K`.
    pub fn of<K: Resource>() -> Self {
        K::info()
    }

    /// The Kubernetes built-in kind `kind` of `group` (`""` for core), if Capstan knows it.
    pub fn builtin(group: &str, kind: &str) -> Option<Self> {
        BUILT_INS
            .iter()
            .find(|b| b.group == group && b.kind == kind)
            .map(BuiltIn::info)
    }

    /// Every Kubernetes built-in kind Capstan knows, in table order.
    pub fn builtins() -> impl Iterator<Item = Self> {
        BUILT_INS.iter().map(BuiltIn::info)
    }

    /// Describes the kind behind a kube-core [`ApiResource`].
    pub fn from_api_resource(resource: &ApiResource, namespaced: bool) -> Self {
        Self::new(
            &resource.group,
            &resource.version,
            &resource.kind,
            &resource.plural,
            namespaced,
        )
    }

    /// Overrides the short names (`po`, `deploy`, ...).
    #[must_use]
    pub fn with_short_names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.short_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Overrides the singular name.
    #[must_use]
    pub fn with_singular(mut self, singular: impl Into<String>) -> Self {
        self.singular = singular.into();
        self
    }

    /// Overrides the served subresources.
    #[must_use]
    pub fn with_subresources(mut self, subresources: Subresources) -> Self {
        self.subresources = subresources;
        self
    }

    /// Overrides the field-selector paths supported besides `metadata.name` and
    /// `metadata.namespace`.
    #[must_use]
    pub fn with_field_labels<S: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = S>,
    ) -> Self {
        self.field_labels = labels.into_iter().map(Into::into).collect();
        self
    }

    /// Overrides the categories the kind belongs to (`all` makes `kubectl get all` list it).
    #[must_use]
    pub fn with_categories<S: Into<String>>(
        mut self,
        categories: impl IntoIterator<Item = S>,
    ) -> Self {
        self.categories = categories.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the extra table columns of the kind (a CustomResourceDefinition's
    /// `additionalPrinterColumns`); built-in kinds have their own printers and none here.
    #[must_use]
    pub fn with_printer_columns(
        mut self,
        columns: impl IntoIterator<Item = PrinterColumn>,
    ) -> Self {
        self.printer_columns = columns.into_iter().collect();
        self
    }

    /// Serves the kind's objects from the storage of `resource` (group and plural, e.g.
    /// `example.com/widgets`): every version of a multi-version kind shares one storage
    /// location, as kube-apiserver keeps one storage version per kind.
    #[must_use]
    pub fn with_storage_resource(mut self, resource: impl Into<String>) -> Self {
        self.storage_resource = resource.into();
        self
    }

    /// The categories the kind belongs to, e.g. `["all"]` for Pods.
    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    /// The extra table columns of the kind; empty for built-in kinds.
    pub fn printer_columns(&self) -> &[PrinterColumn] {
        &self.printer_columns
    }

    /// API group; empty for the core group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// API version within the group, e.g. `v1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Kind, e.g. `Deployment`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Plural resource name, e.g. `deployments`.
    pub fn plural(&self) -> &str {
        &self.plural
    }

    /// Singular resource name, e.g. `deployment`.
    pub fn singular(&self) -> &str {
        &self.singular
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(&self) -> bool {
        self.namespaced
    }

    /// Short names, e.g. `["deploy"]`.
    pub fn short_names(&self) -> &[String] {
        &self.short_names
    }

    /// Served subresources.
    pub fn subresources(&self) -> Subresources {
        self.subresources
    }

    /// Field-selector paths supported besides `metadata.name` and `metadata.namespace`.
    pub fn field_labels(&self) -> &[String] {
        &self.field_labels
    }

    /// Whether a field selector may use `label`: `metadata.name`, `metadata.namespace` or one
    /// of [`field_labels`](Self::field_labels).
    pub fn supports_field_label(&self, label: &str) -> bool {
        matches!(label, "metadata.name" | "metadata.namespace")
            || self.field_labels.iter().any(|l| l == label)
    }

    /// The storage path segment under `/registry`, e.g. `pods`, `minions`,
    /// `services/specs` or `example.com/widgets`.
    pub fn storage_resource(&self) -> &str {
        &self.storage_resource
    }

    /// `apiVersion`: `v1` for core, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Resource qualified by group as Kubernetes messages print it: `pods`,
    /// `deployments.apps`.
    pub fn qualified_resource(&self) -> String {
        qualify(&self.plural, &self.group)
    }

    /// Kind qualified by group as Kubernetes messages print it: `Pod`, `Deployment.apps`.
    pub fn qualified_kind(&self) -> String {
        qualify(&self.kind, &self.group)
    }

    /// Group, version and kind.
    pub fn group_version_kind(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(&self.group, &self.version, &self.kind)
    }

    /// The kube-core [`ApiResource`] for dynamic objects of this kind.
    pub fn to_api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }

    /// Prefix of every key of this kind, with a trailing slash: `/registry/pods/`.
    pub fn storage_prefix(&self) -> String {
        format!("{REGISTRY_ROOT}/{}/", self.storage_resource)
    }

    /// Prefix of every key in `namespace`: `/registry/pods/default/`.
    ///
    /// Fails with [`Error::BadRequest`] for a cluster-scoped kind or an invalid namespace.
    pub fn namespace_prefix(&self, namespace: &str) -> Result<String> {
        if !self.namespaced {
            return Err(self.unexpected_namespace());
        }
        validate_path_segment("metadata.namespace", namespace)?;
        Ok(format!("{}{namespace}/", self.storage_prefix()))
    }

    /// The storage key of one object: `/registry/pods/default/web`, `/registry/minions/n1`.
    ///
    /// Fails with [`Error::BadRequest`] when a namespaced kind gets no namespace, a
    /// cluster-scoped kind gets one, or the name or namespace is empty, `.`, `..`, or contains
    /// `/` or `%`.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> Result<String> {
        let prefix = match (self.namespaced, namespace) {
            (true, Some(namespace)) => self.namespace_prefix(namespace)?,
            (true, None) => {
                return Err(Error::bad_field(
                    "metadata.namespace",
                    format!("a namespace is required for {}", self.qualified_resource()),
                ))
            }
            (false, None) => self.storage_prefix(),
            (false, Some(_)) => return Err(self.unexpected_namespace()),
        };
        validate_path_segment("metadata.name", name)?;
        Ok(format!("{prefix}{name}"))
    }

    /// The inverse of [`key`](Self::key): `(namespace, name)` of a key of this kind, or `None`
    /// when the key belongs elsewhere.
    pub fn parse_key(&self, key: &str) -> Option<(Option<String>, String)> {
        let rest = key.strip_prefix(&self.storage_prefix())?;
        let (namespace, name) = if self.namespaced {
            let (namespace, name) = rest.split_once('/')?;
            (Some(namespace), name)
        } else {
            (None, rest)
        };
        let valid = |s: &str| validate_path_segment("", s).is_ok();
        if !valid(name) || !namespace.is_none_or(valid) {
            return None;
        }
        Some((namespace.map(str::to_string), name.to_string()))
    }

    fn unexpected_namespace(&self) -> Error {
        Error::bad_field(
            "metadata.namespace",
            format!(
                "{} is cluster-scoped and takes no namespace",
                self.qualified_resource()
            ),
        )
    }
}

fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}
