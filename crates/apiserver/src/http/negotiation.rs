//! Content negotiation of what a read answers, by its `Accept` header, as kube-apiserver
//! negotiates it.
//!
//! The header lists media types in order of preference (and `q` weights). A media type may ask
//! for a transformation of the object with the parameters `as`, `g` and `v`: a `Table`
//! (`kubectl get`), a `PartialObjectMetadata` (an object's metadata only) or a
//! `PartialObjectMetadataList` (a list's), each in `meta.k8s.io` `v1` or `v1beta1`. The first
//! acceptable media type wins; one asking for anything else is skipped; when none is
//! acceptable and one asked for a transformation, the answer is `406 NotAcceptable`, as
//! kube-apiserver answers. The server writes JSON only, so another media type without `as`
//! (protobuf, YAML) still gets JSON, which clients read by its `Content-Type`.

use std::collections::HashMap;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use capstan_api::Error;
use serde_json::{json, Value};

use capstan_api::ResourceInfo;

use super::status::ApiError;
use super::table::{self, IncludeObject, TableOptions};

/// The `meta.k8s.io` group the transformations belong to.
pub const META_GROUP: &str = "meta.k8s.io";

/// What a read answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The object or list itself.
    Object,
    /// A `Table` of `meta.k8s.io/<version>`, whose rows carry what `include` says.
    Table {
        /// `v1` or `v1beta1`.
        version: MetaVersion,
        /// The `includeObject` policy.
        include: IncludeObject,
    },
    /// The metadata only: a `PartialObjectMetadata` for an object or a watch event, a
    /// `PartialObjectMetadataList` for a list.
    Metadata {
        /// `v1` or `v1beta1`.
        version: MetaVersion,
    },
}

/// A version of `meta.k8s.io`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaVersion {
    /// `meta.k8s.io/v1`.
    V1,
    /// `meta.k8s.io/v1beta1`.
    V1beta1,
}

impl MetaVersion {
    /// `meta.k8s.io/v1` or `meta.k8s.io/v1beta1`.
    pub fn api_version(self) -> &'static str {
        match self {
            MetaVersion::V1 => "meta.k8s.io/v1",
            MetaVersion::V1beta1 => "meta.k8s.io/v1beta1",
        }
    }

    fn parse(version: &str) -> Option<Self> {
        match version {
            "v1" => Some(MetaVersion::V1),
            "v1beta1" => Some(MetaVersion::V1beta1),
            _ => None,
        }
    }
}

/// What the request reads, which decides the transformations that fit it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One object (`GET .../<name>`).
    Object,
    /// A list (`GET .../<plural>`).
    List,
    /// A watch: each event's object is transformed as one object.
    Watch,
}

/// Why a read cannot be answered as asked.
#[derive(Debug)]
pub enum Refusal {
    /// No acceptable media type: `406 NotAcceptable` with kube-apiserver's message.
    NotAcceptable {
        /// The Status message.
        message: String,
    },
    /// A malformed parameter (`includeObject`): the error's own code.
    Invalid(Error),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Invalid(error) => ApiError(error).into_response(),
            Refusal::NotAcceptable { message } => {
                let status = json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": message,
                    "reason": "NotAcceptable",
                    "code": 406,
                });
                (StatusCode::NOT_ACCEPTABLE, axum::Json(status)).into_response()
            }
        }
    }
}

/// One media range of an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    /// `type/subtype`, lowercase, e.g. `application/json` or `*/*`.
    pub media_type: String,
    /// The parameters besides `q`, names lowercase, values as sent.
    pub parameters: Vec<(String, String)>,
    /// The `q` weight, 1 when absent.
    pub quality: f32,
}

impl MediaRange {
    /// The value of parameter `name`, if present.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether JSON satisfies the media type: `application/json`, `application/*` or `*/*`.
    pub fn accepts_json(&self) -> bool {
        matches!(
            self.media_type.as_str(),
            "application/json" | "application/*" | "*/*" | ""
        )
    }

    /// The `(group, version, as)` a transformation asks for, when `as` is present.
    pub fn transformation(&self) -> Option<(&str, &str, &str)> {
        let kind = self.parameter("as")?;
        Some((
            self.parameter("g").unwrap_or_default(),
            self.parameter("v").unwrap_or_default(),
            kind,
        ))
    }
}

/// The media ranges of every `Accept` header of a request, most preferred first (by `q`,
/// then in the order sent). Ranges with `q=0` are left out.
pub fn accepted_media_ranges(headers: &HeaderMap) -> Vec<MediaRange> {
    let mut ranges: Vec<MediaRange> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(parse_media_range)
        .filter(|range| range.quality > 0.0)
        .collect();
    // A stable sort keeps the order sent among equal weights.
    ranges.sort_by(|a, b| b.quality.total_cmp(&a.quality));
    ranges
}

fn parse_media_range(text: &str) -> Option<MediaRange> {
    let mut parts = text.split(';');
    let media_type = parts.next()?.trim().to_ascii_lowercase();
    if media_type.is_empty() {
        return None;
    }
    let mut parameters = Vec::new();
    let mut quality = 1.0;
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().trim_matches('"').to_string();
        if name == "q" {
            quality = value.parse().unwrap_or(1.0);
        } else {
            parameters.push((name, value));
        }
    }
    Some(MediaRange {
        media_type,
        parameters,
        quality,
    })
}

/// What a read of `shape` answers for this request's `Accept` header and `includeObject`
/// parameter.
///
/// Errors: [`Refusal::NotAcceptable`] when no media type is acceptable and one asked for a
/// transformation, or when the chosen one does not fit the shape (a
/// `PartialObjectMetadata` of a list, a `PartialObjectMetadataList` of one object);
/// [`Refusal::Invalid`] for an `includeObject` other than `None`, `Metadata` or `Object`.
pub fn negotiate_output(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    shape: Shape,
) -> Result<Output, Refusal> {
    let ranges = accepted_media_ranges(headers);
    let mut asked_for_transformation = false;
    for range in &ranges {
        let Some((group, version, kind)) = range.transformation() else {
            // A plain media type: the object itself (JSON, whatever was asked).
            return Ok(Output::Object);
        };
        asked_for_transformation = true;
        if !range.accepts_json() || group != META_GROUP {
            continue;
        }
        let Some(version) = MetaVersion::parse(version) else {
            continue;
        };
        return match kind {
            "Table" => Ok(Output::Table {
                version,
                include: include_object(query)?,
            }),
            "PartialObjectMetadata" if shape == Shape::List => Err(Refusal::NotAcceptable {
                message: "you requested PartialObjectMetadata, but the requested object is a list"
                    .to_string(),
            }),
            "PartialObjectMetadataList" if shape == Shape::Object => Err(Refusal::NotAcceptable {
                message: "you requested PartialObjectMetadataList, but the requested object \
                              is not a list"
                    .to_string(),
            }),
            "PartialObjectMetadata" | "PartialObjectMetadataList" => {
                Ok(Output::Metadata { version })
            }
            _ => continue,
        };
    }
    if asked_for_transformation {
        let accepted = match shape {
            Shape::Watch => "application/json;stream=watch",
            Shape::Object | Shape::List => "application/json",
        };
        return Err(Refusal::NotAcceptable {
            message: format!("only the following media types are accepted: {accepted}"),
        });
    }
    Ok(Output::Object)
}

/// The `includeObject` policy of a Table request.
fn include_object(query: &HashMap<String, String>) -> Result<IncludeObject, Refusal> {
    let value = query.get("includeObject").map_or("", String::as_str);
    IncludeObject::parse(value).ok_or_else(|| {
        Refusal::Invalid(Error::bad_field(
            "includeObject",
            format!("invalid includeObject {value:?}: must be one of None, Metadata or Object"),
        ))
    })
}

/// The `PartialObjectMetadata` of `object` (its JSON form) in `version`.
pub fn partial_object_metadata(object: &Value, version: MetaVersion) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": version.api_version(),
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The `PartialObjectMetadataList` of `objects`, with the list's `metadata` (resourceVersion,
/// continue, remainingItemCount).
pub fn partial_object_metadata_list(
    objects: &[Value],
    list_metadata: Value,
    version: MetaVersion,
) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": version.api_version(),
        "metadata": list_metadata,
        "items": objects
            .iter()
            .map(|object| partial_object_metadata(object, version))
            .collect::<Vec<_>>(),
    })
}

/// The body answering `output` for `objects` of `resource` read as `shape`: a Table of them,
/// or their metadata (a `PartialObjectMetadataList` for a list, the one object's
/// `PartialObjectMetadata` otherwise); `None` for [`Output::Object`], which is answered
/// untransformed. `list_metadata` is the list's (or a Table's) metadata; `with_columns` false
/// leaves a Table's column definitions out (watch events after the first).
pub fn transform(
    resource: &ResourceInfo,
    objects: &[Value],
    list_metadata: Value,
    output: Output,
    shape: Shape,
    with_columns: bool,
    now: i64,
) -> Option<Value> {
    match output {
        Output::Object => None,
        Output::Table { version, include } => Some(table::table(
            resource,
            objects,
            list_metadata,
            &TableOptions {
                version,
                include,
                with_columns,
                now,
            },
        )),
        Output::Metadata { version } if shape == Shape::List => Some(partial_object_metadata_list(
            objects,
            list_metadata,
            version,
        )),
        Output::Metadata { version } => Some(partial_object_metadata(
            objects.first().unwrap_or(&Value::Null),
            version,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        headers
    }

    fn negotiate(value: &str, shape: Shape) -> Result<Output, Refusal> {
        negotiate_output(&accept(value), &HashMap::new(), shape)
    }

    #[test]
    fn kubectl_get_asks_for_a_v1_table_with_a_json_fallback() {
        let output = negotiate(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
            Shape::List,
        )
        .unwrap();
        assert_eq!(
            output,
            Output::Table {
                version: MetaVersion::V1,
                include: IncludeObject::Metadata
            }
        );
    }

    #[test]
    fn metadata_is_served_for_objects_lists_and_watches_in_both_versions() {
        let one = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        let list = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1";
        let v1 = Output::Metadata {
            version: MetaVersion::V1,
        };
        assert_eq!(negotiate(one, Shape::Object).unwrap(), v1);
        assert_eq!(negotiate(one, Shape::Watch).unwrap(), v1);
        assert_eq!(
            negotiate(list, Shape::List).unwrap(),
            Output::Metadata {
                version: MetaVersion::V1beta1
            }
        );
    }

    #[test]
    fn a_transformation_that_does_not_fit_the_shape_is_not_acceptable() {
        let one = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        let list = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        for (value, shape) in [(one, Shape::List), (list, Shape::Object)] {
            match negotiate(value, shape) {
                Err(Refusal::NotAcceptable { message }) => {
                    assert!(message.starts_with("you requested"), "{message}")
                }
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_transformations_are_skipped_then_refused_without_a_fallback() {
        assert_eq!(
            negotiate(
                "application/json;as=Widget;g=meta.k8s.io;v=v1,application/json",
                Shape::Object
            )
            .unwrap(),
            Output::Object
        );
        for value in [
            "application/json;as=Widget;g=meta.k8s.io;v=v1",
            "application/json;as=Table;g=example.com;v=v1",
            "application/json;as=Table;g=meta.k8s.io;v=v2",
        ] {
            match negotiate(value, Shape::List) {
                Err(Refusal::NotAcceptable { message }) => assert_eq!(
                    message,
                    "only the following media types are accepted: application/json"
                ),
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    #[test]
    fn weights_order_the_media_ranges_and_zero_weights_are_ignored() {
        let output = negotiate(
            "application/json;q=0.5,application/json;as=Table;g=meta.k8s.io;v=v1;q=0.9",
            Shape::List,
        )
        .unwrap();
        assert!(matches!(output, Output::Table { .. }), "{output:?}");
        assert_eq!(
            negotiate(
                "application/json;as=Table;g=meta.k8s.io;v=v1;q=0,application/json",
                Shape::List
            )
            .unwrap(),
            Output::Object
        );
    }

    #[test]
    fn plain_or_missing_accept_headers_read_the_object() {
        assert_eq!(negotiate("*/*", Shape::Object).unwrap(), Output::Object);
        assert_eq!(
            negotiate("application/vnd.kubernetes.protobuf", Shape::List).unwrap(),
            Output::Object
        );
        assert_eq!(
            negotiate_output(&HeaderMap::new(), &HashMap::new(), Shape::Watch).unwrap(),
            Output::Object
        );
    }

    #[test]
    fn a_bad_include_object_is_a_bad_request() {
        let mut query = HashMap::new();
        query.insert("includeObject".to_string(), "object".to_string());
        let refusal = negotiate_output(
            &accept("application/json;as=Table;g=meta.k8s.io;v=v1"),
            &query,
            Shape::List,
        )
        .unwrap_err();
        assert!(
            matches!(&refusal, Refusal::Invalid(error) if error.code() == 400),
            "{refusal:?}"
        );
    }

    #[test]
    fn metadata_documents_keep_only_the_metadata() {
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a"}, "spec": {}});
        let partial = partial_object_metadata(&pod, MetaVersion::V1beta1);
        assert_eq!(
            partial,
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1beta1", "metadata": {"name": "a"}})
        );
        let list =
            partial_object_metadata_list(&[pod], json!({"resourceVersion": "7"}), MetaVersion::V1);
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert_eq!(list["metadata"]["resourceVersion"], "7");
        assert_eq!(list["items"][0]["metadata"]["name"], "a");
    }
}
