//! The admission chain: ordered, pluggable steps every write passes before it is stored.
//!
//! As in kube-apiserver, a write first goes through every **mutating** step, in order (each
//! sees the previous one's changes), then the registry fills in what it owns (uid, timestamps,
//! generated name, cluster IP), then every **validating** step, in order. Any step may reject
//! the request with any [`Error`]; nothing is stored then. Validating steps see a scratch copy:
//! what they change is discarded.
//!
//! [`AdmissionChain::builtin`] holds Kubernetes' [`Defaulting`] and [`Validation`]; add your own
//! steps with [`Registry::add_admission`](super::Registry::add_admission), or implement
//! [`AdmissionStep`] from closures with [`mutating`] and [`validating`].
//!
//! ```
//! use capstan_apiserver::registry::admission::{self, AdmissionChain, Operation};
//! use capstan_api::{Error, FieldError};
//!
//! let chain = AdmissionChain::builtin()
//!     .with(admission::mutating("team-label", |_request, object| {
//!         object["metadata"]["labels"]["team"] = "payments".into();
//!         Ok(())
//!     }))
//!     .with(admission::validating("no-latest", |request, object| {
//!         if request.operation == Operation::Create && object["spec"]["image"] == "latest" {
//!             return Err(Error::Invalid {
//!                 kind: request.resource.qualified_kind(),
//!                 name: request.name.to_string(),
//!                 causes: vec![FieldError::forbidden("spec.image", "latest is not allowed")],
//!             });
//!         }
//!         Ok(())
//!     }));
//! assert_eq!(chain.names(), ["Defaulting", "team-label", "Validation", "no-latest"]);
//! ```

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use capstan_api::{Error, ResourceInfo, Result};
use serde_json::Value;

pub use super::defaults::Defaulting;
pub use super::kinds::namespace::{NamespaceLifecycle, SYSTEM_NAMESPACES};
pub use super::validation::Validation;

pub mod pod_security;
pub mod warnings;

pub use pod_security::PodSecurityAdmission;

/// The verb being admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A create.
    Create,
    /// An update or patch (of the object, or of its status with
    /// [`AdmissionRequest::subresource`] `Some("status")`).
    Update,
    /// A delete. Only validating steps run; the object is the one being deleted.
    Delete,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        })
    }
}

/// When a step runs: all mutating steps run before all validating steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdmissionPhase {
    /// May change the object; runs first, in chain order.
    Mutating,
    /// May only accept or reject; runs after every mutating step, in chain order.
    Validating,
}

/// What is being admitted, besides the object itself.
#[derive(Clone, Copy, Debug)]
pub struct AdmissionRequest<'a> {
    /// The verb.
    pub operation: Operation,
    /// `Some("status")` for a status update; `None` for the object itself.
    pub subresource: Option<&'a str>,
    /// The kind, as registered.
    pub resource: &'a ResourceInfo,
    /// The namespace; `None` for a cluster-scoped kind.
    pub namespace: Option<&'a str>,
    /// The object's name. Empty for a create that uses `generateName` while mutating steps run
    /// (the name is generated afterwards); set when validating steps run.
    pub name: &'a str,
    /// The stored object, for updates and deletes.
    pub old_object: Option<&'a Value>,
    /// Whether the request is a dry run: nothing will be stored whatever the steps say. Steps
    /// with side effects must skip them.
    pub dry_run: bool,
}

/// One admission step: Kubernetes' admission plugins and webhooks, in process.
///
/// Called by the registry for every create, update, patch and status update, and (validating
/// steps only) every delete, with the object in its JSON form. A step must be deterministic
/// enough to run again: the registry re-runs validating steps when it retries a write (a
/// generated name taken meanwhile, a concurrent update).
///
/// Returning an error rejects the request with that error, unchanged (so pick the Kubernetes
/// reason a client expects: [`Error::Invalid`] for a bad field, [`Error::Forbidden`] for a
/// policy); nothing is stored.
#[async_trait]
pub trait AdmissionStep: Send + Sync + 'static {
    /// A short name for logs and [`AdmissionChain::names`].
    fn name(&self) -> &str;

    /// Whether the step mutates or only validates.
    fn phase(&self) -> AdmissionPhase;

    /// Admits (possibly changing, for a mutating step) `object`, or rejects the request.
    async fn admit(&self, request: &AdmissionRequest<'_>, object: &mut Value) -> Result<()>;

    /// Whether a mutating step's output always decodes into the kind's typed object when its
    /// input did. The default is `false`: after such a step, the registry decodes the object
    /// into its typed form again before storing it, so a step that writes a mistyped field
    /// gets the write refused (400) instead of storing it. The built-in [`Defaulting`] keeps
    /// types and says so.
    fn keeps_types(&self) -> bool {
        false
    }
}

/// An ordered list of [`AdmissionStep`]s.
///
/// Cheap to clone (steps are shared). Mutating steps run in the order added, then validating
/// steps in the order added, whatever their interleaving in the list.
#[derive(Clone, Default)]
pub struct AdmissionChain {
    steps: Vec<Arc<dyn AdmissionStep>>,
}

impl fmt::Debug for AdmissionChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl AdmissionChain {
    /// A chain with no steps: objects are stored as sent (plus what the registry itself owns).
    pub fn new() -> Self {
        AdmissionChain::default()
    }

    /// Kubernetes' built-in defaulting and validation: [`Defaulting`] then [`Validation`],
    /// with no namespace lifecycle (see [`builtin_over`](Self::builtin_over)).
    pub fn builtin() -> Self {
        AdmissionChain::new().with(Defaulting).with(Validation)
    }

    /// Kubernetes' built-in behaviour over `store` (the registry's own), what
    /// [`Registry::new`](super::Registry::new) uses: [`Defaulting`], then
    /// [`NamespaceLifecycle`] (reading namespaces from `store`), then [`Validation`].
    pub fn builtin_over(store: Arc<dyn capstan_store::Store>) -> Self {
        AdmissionChain::new()
            .with(Defaulting)
            .with(NamespaceLifecycle::new(store))
            .with(Validation)
    }

    /// Adds a step at the end of its phase.
    #[must_use]
    pub fn with(mut self, step: impl AdmissionStep) -> Self {
        self.push(Arc::new(step));
        self
    }

    /// Adds a shared step at the end of its phase.
    pub fn push(&mut self, step: Arc<dyn AdmissionStep>) {
        self.steps.push(step);
    }

    /// The steps' names, mutating ones first, in the order they run.
    pub fn names(&self) -> Vec<&str> {
        self.in_phase(AdmissionPhase::Mutating)
            .chain(self.in_phase(AdmissionPhase::Validating))
            .map(|step| step.name())
            .collect()
    }

    /// Whether a mutating step may leave an object that no longer decodes into its typed
    /// form (one whose [`AdmissionStep::keeps_types`] is `false`), so that the registry must
    /// decode it again after [`mutate`](Self::mutate).
    pub fn mutation_may_break_types(&self) -> bool {
        self.in_phase(AdmissionPhase::Mutating)
            .any(|step| !step.keeps_types())
    }

    /// Runs every mutating step on `object`, in order; stops at the first rejection.
    pub async fn mutate(&self, request: &AdmissionRequest<'_>, object: &mut Value) -> Result<()> {
        for step in self.in_phase(AdmissionPhase::Mutating) {
            step.admit(request, object).await?;
        }
        Ok(())
    }

    /// Runs every validating step on a copy of `object`, in order; stops at the first
    /// rejection.
    pub async fn validate(&self, request: &AdmissionRequest<'_>, object: &Value) -> Result<()> {
        let mut steps = self.in_phase(AdmissionPhase::Validating).peekable();
        if steps.peek().is_none() {
            return Ok(());
        }
        let mut scratch = object.clone();
        for step in steps {
            step.admit(request, &mut scratch).await?;
        }
        Ok(())
    }

    fn in_phase(&self, phase: AdmissionPhase) -> impl Iterator<Item = &Arc<dyn AdmissionStep>> {
        self.steps.iter().filter(move |step| step.phase() == phase)
    }
}

/// A mutating step from a closure; see [`AdmissionStep`].
pub fn mutating<F>(name: impl Into<String>, admit: F) -> FnStep<F>
where
    F: Fn(&AdmissionRequest<'_>, &mut Value) -> Result<()> + Send + Sync + 'static,
{
    FnStep {
        name: name.into(),
        phase: AdmissionPhase::Mutating,
        admit,
    }
}

/// A validating step from a closure; see [`AdmissionStep`]. Changes it makes are discarded.
pub fn validating<F>(name: impl Into<String>, admit: F) -> FnStep<F>
where
    F: Fn(&AdmissionRequest<'_>, &mut Value) -> Result<()> + Send + Sync + 'static,
{
    FnStep {
        name: name.into(),
        phase: AdmissionPhase::Validating,
        admit,
    }
}

/// An [`AdmissionStep`] made of a synchronous closure, by [`mutating`] or [`validating`].
pub struct FnStep<F> {
    name: String,
    phase: AdmissionPhase,
    admit: F,
}

impl<F> fmt::Debug for FnStep<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnStep")
            .field("name", &self.name)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<F> AdmissionStep for FnStep<F>
where
    F: Fn(&AdmissionRequest<'_>, &mut Value) -> Result<()> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn phase(&self) -> AdmissionPhase {
        self.phase
    }

    async fn admit(&self, request: &AdmissionRequest<'_>, object: &mut Value) -> Result<()> {
        (self.admit)(request, object)
    }
}

/// Rejects with [`Error::Invalid`] for `causes`, if there are any.
pub(crate) fn invalid_unless_empty(
    request: &AdmissionRequest<'_>,
    causes: Vec<capstan_api::FieldError>,
) -> Result<()> {
    if causes.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid {
        kind: request.resource.qualified_kind(),
        name: request.name.to_string(),
        causes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support::{within, LIMIT};
    use serde_json::json;

    fn request(resource: &ResourceInfo) -> AdmissionRequest<'_> {
        AdmissionRequest {
            operation: Operation::Create,
            subresource: None,
            resource,
            namespace: Some("default"),
            name: "web",
            old_object: None,
            dry_run: false,
        }
    }

    fn append(
        name: &'static str,
    ) -> FnStep<impl Fn(&AdmissionRequest<'_>, &mut Value) -> Result<()>> {
        mutating(name, move |_, object| {
            object["seen"]
                .as_array_mut()
                .expect("seen is a list")
                .push(name.into());
            Ok(())
        })
    }

    #[tokio::test]
    async fn mutating_steps_run_in_order_before_validating_steps() {
        let chain = AdmissionChain::new()
            .with(append("first"))
            .with(validating("check", |_, object| {
                assert_eq!(object["seen"], json!(["first", "second"]));
                Ok(())
            }))
            .with(append("second"));
        assert_eq!(chain.names(), ["first", "second", "check"]);
        let resource = ResourceInfo::builtin("", "ConfigMap").unwrap();
        let mut object = json!({"seen": []});
        within(LIMIT, async {
            chain.mutate(&request(&resource), &mut object).await?;
            chain.validate(&request(&resource), &object).await
        })
        .await
        .unwrap();
        assert_eq!(object["seen"], json!(["first", "second"]));
    }

    #[tokio::test]
    async fn a_validating_step_cannot_change_the_object() {
        let chain = AdmissionChain::new().with(validating("sneaky", |_, object| {
            object["sneaky"] = true.into();
            Ok(())
        }));
        let resource = ResourceInfo::builtin("", "ConfigMap").unwrap();
        let object = json!({});
        within(LIMIT, chain.validate(&request(&resource), &object))
            .await
            .unwrap();
        assert_eq!(object, json!({}));
    }

    #[tokio::test]
    async fn the_first_rejection_stops_the_chain_with_its_error() {
        let chain = AdmissionChain::new()
            .with(mutating("deny", |_, _| {
                Err(Error::Forbidden {
                    message: "no".into(),
                })
            }))
            .with(mutating("never", |_, _| panic!("ran after a rejection")));
        let resource = ResourceInfo::builtin("", "ConfigMap").unwrap();
        let error = within(LIMIT, chain.mutate(&request(&resource), &mut json!({})))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            Error::Forbidden {
                message: "no".into()
            }
        );
    }

    #[test]
    fn the_builtin_chain_defaults_then_validates() {
        assert_eq!(
            AdmissionChain::builtin().names(),
            ["Defaulting", "Validation"]
        );
    }
}
