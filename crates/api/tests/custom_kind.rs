//! A user-defined kind, declared with `capstan_api::resource!`, works everywhere a built-in
//! kind does: info, storage keys, apiVersion, serde, selectors and dynamic conversion.

use std::collections::BTreeMap;

use capstan_api::{
    client::{from_dynamic, to_dynamic},
    field::FieldSelector,
    kube_core::{self, ObjectMeta, ResourceExt},
    parse_label_selector, selector, Resource, ResourceInfo, Subresources,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Widget {
    metadata: ObjectMeta,
    spec: WidgetSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct WidgetSpec {
    size: u32,
}

capstan_api::resource!(
    Widget,
    group = "example.com",
    version = "v1",
    kind = "Widget",
    plural = "widgets",
    scope = Namespaced
);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Gadget {
    metadata: ObjectMeta,
}

capstan_api::resource!(
    Gadget,
    group = "example.com",
    version = "v1alpha1",
    kind = "Gadget",
    plural = "gadgets",
    scope = Cluster
);

fn widget(name: &str, size: u32, labels: &[(&str, &str)]) -> Widget {
    Widget {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        },
        spec: WidgetSpec { size },
    }
}

#[test]
fn widget_info_uses_custom_kind_defaults() {
    let info = Widget::info();
    assert_eq!(info, ResourceInfo::of::<Widget>());
    assert_eq!(
        info,
        ResourceInfo::new("example.com", "v1", "Widget", "widgets", true)
    );
    assert_eq!(info.group(), "example.com");
    assert_eq!(info.version(), "v1");
    assert_eq!(info.kind(), "Widget");
    assert_eq!(info.plural(), "widgets");
    assert_eq!(info.singular(), "widget");
    assert!(info.namespaced());
    assert!(info.short_names().is_empty());
    assert_eq!(
        info.subresources(),
        Subresources {
            status: true,
            scale: false
        }
    );
    assert_eq!(info.qualified_resource(), "widgets.example.com");
    assert_eq!(info.qualified_kind(), "Widget.example.com");
}

#[test]
fn widget_api_version_joins_group_and_version() {
    assert_eq!(Widget::info().api_version(), "example.com/v1");
    assert_eq!(
        <Widget as kube_core::Resource>::api_version(&()),
        "example.com/v1"
    );
    let api_resource = Widget::info().to_api_resource();
    assert_eq!(api_resource.api_version, "example.com/v1");
    assert_eq!(api_resource.plural, "widgets");
}

#[test]
fn widget_is_stored_under_its_group() {
    let info = Widget::info();
    assert_eq!(info.storage_prefix(), "/registry/example.com/widgets/");
    let key = info.key(Some("default"), "w1").unwrap();
    assert_eq!(key, "/registry/example.com/widgets/default/w1");
    assert_eq!(
        info.parse_key(&key),
        Some((Some("default".into()), "w1".into()))
    );
    assert!(info.key(None, "w1").unwrap_err().code() == 400);
}

#[test]
fn cluster_scoped_custom_kind_has_no_namespace_segment() {
    let info = Gadget::info();
    assert!(!info.namespaced());
    assert_eq!(info.api_version(), "example.com/v1alpha1");
    assert_eq!(
        info.key(None, "g1").unwrap(),
        "/registry/example.com/gadgets/g1"
    );
    assert!(info.key(Some("default"), "g1").is_err());
}

#[test]
fn widget_round_trips_through_json() {
    let original = widget("w1", 3, &[("app", "shop")]);
    let json = serde_json::to_value(&original).unwrap();
    assert_eq!(json["spec"]["size"], 3);
    assert_eq!(json["metadata"]["name"], "w1");
    let back: Widget = serde_json::from_value(json).unwrap();
    assert_eq!(back, original);
}

#[test]
fn widget_round_trips_through_a_dynamic_object_with_type_meta() {
    let original = widget("w1", 3, &[]);
    let dynamic = to_dynamic(&Widget::info(), &original).unwrap();
    let types = dynamic.types.clone().unwrap();
    assert_eq!(types.api_version, "example.com/v1");
    assert_eq!(types.kind, "Widget");
    assert_eq!(dynamic.data["spec"]["size"], 3);
    let back: Widget = from_dynamic(&Widget::info(), dynamic).unwrap();
    assert_eq!(back, original);
}

#[test]
fn label_selector_matches_widgets_by_their_labels() {
    let selector = parse_label_selector("app=shop,size in (small,large),!deprecated").unwrap();
    let small = widget("w1", 1, &[("app", "shop"), ("size", "small")]);
    let old = widget(
        "w2",
        1,
        &[("app", "shop"), ("size", "small"), ("deprecated", "")],
    );
    let other = widget("w3", 1, &[("app", "blog"), ("size", "large")]);
    assert!(selector::matches(&selector, Some(small.labels())));
    assert!(!selector::matches(&selector, Some(old.labels())));
    assert!(!selector::matches(&selector, Some(other.labels())));
}

#[test]
fn widget_field_selectors_need_declared_field_labels() {
    let by_size = FieldSelector::parse("spec.size=3").unwrap();
    assert!(by_size.validate_for(&Widget::info()).is_err());
    let info = Widget::info().with_field_labels(["spec.size"]);
    by_size.validate_for(&info).unwrap();
    let json = serde_json::to_value(widget("w1", 3, &[])).unwrap();
    assert!(by_size.matches(&json));
}
