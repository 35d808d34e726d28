//! Code that compiles against every Kubernetes API version k8s-openapi offers.
//!
//! k8s-openapi generates its types from each Kubernetes release's OpenAPI document, and the
//! releases disagree on which fields are optional: from Kubernetes 1.37 on, `Deployment.spec`
//! is a `DeploymentSpec` where 1.33 to 1.36 have `Option<DeploymentSpec>`, a
//! `DeploymentCondition`'s `status` became `Option<String>`, and an `EndpointSlice`'s
//! `endpoints` an `Option<Vec<Endpoint>>`. The application picks the version (k8s-openapi's
//! rule), so library code must read and write such fields the same way under all of them.
//!
//! [`Maybe`] is that one way: it is implemented for `Option<T>` and for the required form `T`
//! of every field whose optionality differs between versions, so `deployment.spec.opt()` is an
//! `Option<&DeploymentSpec>` under every version. To write such a field, wrap the value in
//! [`value`] (`spec: compat::value(ReplicaSetSpec { .. })`), which is `Some(value)` where the
//! field is optional and the value itself where it is required.
//!
//! ```
//! use capstan_api::compat::Maybe;
//! use capstan_api::k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
//!
//! let mut deployment = Deployment::default();
//! deployment.spec.or_default_mut().replicas = Some(3);
//! assert_eq!(deployment.spec.opt().and_then(|s| s.replicas), Some(3));
//! let spec: DeploymentSpec = deployment.spec.clone().into_opt().unwrap_or_default();
//! assert_eq!(spec.replicas, Some(3));
//! ```

use k8s_openapi::api::apps::v1::{DaemonSetSpec, DeploymentSpec, ReplicaSetSpec, StatefulSetSpec};
use k8s_openapi::api::autoscaling;
use k8s_openapi::api::batch::v1::CronJobSpec;
use k8s_openapi::api::networking::v1::IPAddressSpec;

/// A field that is `Option<T>` under some Kubernetes API versions and `T` under others.
///
/// Under the versions where the field is required, [`opt`](Maybe::opt) is always `Some`, and
/// an object decoded without the field holds `T::default()` there (k8s-openapi's decoding).
pub trait Maybe<T> {
    /// The value, if there is one.
    fn opt(&self) -> Option<&T>;
    /// The value to change in place, if there is one.
    fn opt_mut(&mut self) -> Option<&mut T>;
    /// The value to change in place, set to `T::default()` first if there is none.
    fn or_default_mut(&mut self) -> &mut T
    where
        T: Default;
    /// The value, taken out.
    fn into_opt(self) -> Option<T>;
    /// Whether the field holds `value`.
    fn is(&self, value: &T) -> bool
    where
        T: PartialEq,
    {
        self.opt() == Some(value)
    }
}

impl<T> Maybe<T> for Option<T> {
    fn opt(&self) -> Option<&T> {
        self.as_ref()
    }
    fn opt_mut(&mut self) -> Option<&mut T> {
        self.as_mut()
    }
    fn or_default_mut(&mut self) -> &mut T
    where
        T: Default,
    {
        self.get_or_insert_with(T::default)
    }
    fn into_opt(self) -> Option<T> {
        self
    }
}

macro_rules! required_form {
    ($($(#[$generic:meta])? [$($param:ident),*] $ty:ty;)*) => {$(
        impl<$($param),*> Maybe<$ty> for $ty {
            fn opt(&self) -> Option<&$ty> {
                Some(self)
            }
            fn opt_mut(&mut self) -> Option<&mut $ty> {
                Some(self)
            }
            fn or_default_mut(&mut self) -> &mut $ty
            where
                $ty: Default,
            {
                self
            }
            fn into_opt(self) -> Option<$ty> {
                Some(self)
            }
        }
    )*};
}

required_form! {
    [] String;
    [] i32;
    [] i64;
    [T] Vec<T>;
    [] DeploymentSpec;
    [] ReplicaSetSpec;
    [] DaemonSetSpec;
    [] StatefulSetSpec;
    [] CronJobSpec;
    [] IPAddressSpec;
    [] autoscaling::v1::HorizontalPodAutoscalerSpec;
    [] autoscaling::v2::HorizontalPodAutoscalerSpec;
}

/// A list field that is `Option<Vec<T>>` under some Kubernetes API versions and `Vec<T>` under
/// others (for example `EndpointSlice.endpoints`, required up to 1.36 and optional from 1.37).
pub trait MaybeList<T> {
    /// The items (empty when the field is unset).
    fn items(&self) -> &[T];
    /// The list to change in place, set to an empty list first if unset.
    fn items_mut(&mut self) -> &mut Vec<T>;
}

impl<T> MaybeList<T> for Option<Vec<T>> {
    fn items(&self) -> &[T] {
        self.as_deref().unwrap_or_default()
    }
    fn items_mut(&mut self) -> &mut Vec<T> {
        self.get_or_insert_with(Vec::new)
    }
}

impl<T> MaybeList<T> for Vec<T> {
    fn items(&self) -> &[T] {
        self
    }
    fn items_mut(&mut self) -> &mut Vec<T> {
        self
    }
}

/// `value` in the form of the field it is written to: `Some(value)` where the field is optional
/// under the chosen Kubernetes version, `value` itself where it is required.
///
/// The same as `value.into()`, without the lint that flags that conversion as useless under
/// the versions where it is the identity.
pub fn value<T, F: From<T>>(value: T) -> F {
    F::from(value)
}

/// Whether a condition's `status` (a `String`, or an `Option<String>` under newer versions)
/// is `"True"`.
pub fn is_true(status: &impl Maybe<String>) -> bool {
    status.opt().is_some_and(|s| s == "True")
}

/// A condition's `status` or `type` as a string slice (`""` when unset).
pub fn text(field: &impl Maybe<String>) -> &str {
    field.opt().map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_optional_field_reads_and_writes_through_the_same_calls_as_a_required_one() {
        let mut optional: Option<String> = None;
        assert_eq!(optional.opt(), None);
        optional.or_default_mut().push_str("True");
        assert!(is_true(&optional));
        let mut required = String::new();
        assert_eq!(required.opt(), Some(&String::new()));
        required.or_default_mut().push_str("False");
        assert!(!is_true(&required));
        assert_eq!(text(&required), "False");
        assert_eq!(text(&None::<String>), "");
    }

    #[test]
    fn a_list_field_reads_the_same_whether_optional_or_required() {
        let mut optional: Option<Vec<u8>> = None;
        assert!(optional.items().is_empty());
        optional.items_mut().push(1);
        let required = vec![1u8];
        assert_eq!(optional.items(), required.items());
    }

    #[test]
    fn into_builds_either_form_of_a_field() {
        let spec = DeploymentSpec {
            replicas: Some(2),
            ..Default::default()
        };
        let optional: Option<DeploymentSpec> = spec.clone().into();
        let required: DeploymentSpec = spec.clone();
        assert_eq!(optional.opt(), required.opt());
        assert!(optional.is(&spec));
    }
}
