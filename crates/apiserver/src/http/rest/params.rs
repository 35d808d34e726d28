//! Query parameters and options: `dryRun`, `fieldValidation`, `fieldManager`, list and
//! delete options.

use super::*;

/// Every value of the query parameter `name` in `raw_query`, percent-decoded (`+` is a
/// space), in order: list parameters such as `dryRun` may repeat.
pub fn query_values(raw_query: &str, name: &str) -> Vec<String> {
    raw_query
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
        .collect()
}

pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|&b| (b as char).to_digit(16))
                .map(|d| d as u8)
        };
        match bytes[index] {
            b'%' => match (hex(index + 1), hex(index + 2)) {
                (Some(high), Some(low)) => {
                    decoded.push(high << 4 | low);
                    index += 3;
                    continue;
                }
                _ => decoded.push(b'%'),
            },
            b'+' => decoded.push(b' '),
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Kubernetes' `ValidateDryRun`: every value must be `All`. Returns whether the request is a
/// dry run (some value given).
///
/// Errors: [`Error::Invalid`] on `<kind>.meta.k8s.io ""` with a `FieldValueNotSupported`
/// cause on `dryRun`, e.g. `dryRun: Unsupported value: []string{"true"}: supported values:
/// "All"`.
pub(super) fn validate_dry_run(kind: &str, values: &[String]) -> Result<bool, Error> {
    if values.iter().all(|v| v == "All") {
        return Ok(!values.is_empty());
    }
    let mut cause = capstan_api::error::FieldError::not_supported("dryRun", "", ["All"]);
    // Go's `%#v` of the `[]string`, as Kubernetes prints it.
    let quoted: Vec<String> = values
        .iter()
        .map(|v| Value::from(v.as_str()).to_string())
        .collect();
    cause.kind = capstan_api::error::FieldErrorKind::NotSupported {
        value: format!("[]string{{{}}}", quoted.join(", ")),
        supported: vec!["All".into()],
    };
    Err(Error::Invalid {
        kind: format!("{kind}.meta.k8s.io"),
        name: String::new(),
        causes: vec![cause],
    })
}

pub(super) fn post_params(
    dry_run: bool,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> PostParams {
    PostParams {
        dry_run,
        field_manager: field_manager(query, headers),
    }
}

/// The write's field manager: the `fieldManager` parameter, else, as kube-apiserver derives
/// it, the `User-Agent` up to its first `/` (`kubectl/v1.32.4 (linux/amd64)` → `kubectl`),
/// without unprintable characters, at most 128 bytes.
pub(super) fn field_manager(
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Option<String> {
    if let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return Some(manager.clone());
    }
    let agent = headers.get(header::USER_AGENT)?.to_str().ok()?;
    let prefix = agent.split('/').next().unwrap_or_default();
    let mut manager = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if manager.len() + c.len_utf8() > 128 {
            break;
        }
        manager.push(c);
    }
    Some(manager).filter(|m| !m.is_empty())
}

pub(super) fn list_params(query: &HashMap<String, String>) -> Result<ListParams, Error> {
    let limit = match query.get("limit") {
        Some(limit) => Some(
            limit
                .parse::<u32>()
                .map_err(|_| Error::bad_field("limit", format!("invalid limit {limit:?}")))?,
        ),
        None => None,
    };
    let mut params = ListParams {
        label_selector: query.get("labelSelector").cloned(),
        field_selector: query.get("fieldSelector").cloned(),
        limit: limit.filter(|limit| *limit > 0),
        continue_token: query.get("continue").cloned().filter(|t| !t.is_empty()),
        resource_version: query.get("resourceVersion").cloned(),
        ..Default::default()
    };
    params.version_match = match query.get("resourceVersionMatch").map(String::as_str) {
        None | Some("") => None,
        Some("NotOlderThan") => Some(VersionMatch::NotOlderThan),
        Some("Exact") => Some(VersionMatch::Exact),
        Some(other) => {
            return Err(Error::bad_field(
                "resourceVersionMatch",
                format!("unsupported value {other:?}"),
            ))
        }
    };
    Ok(params)
}

/// The options of a delete: the query's, then the `DeleteOptions` body's.
///
/// Errors: [`Error::BadRequest`] for a malformed body or an unknown `propagationPolicy`;
/// [`Error::Invalid`] for a `dryRun` in the body other than `["All"]`.
pub(super) async fn delete_params(
    dry_run: bool,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<DeleteParams, Error> {
    let options: Value = if body.is_empty() {
        Value::Null
    } else if is_protobuf(headers)? {
        off_thread(body.len(), move || {
            crate::protobuf::decode_options(&body, crate::protobuf::DELETE_OPTIONS, "DeleteOptions")
        })
        .await?
    } else {
        off_thread(body.len(), move || {
            check_json_depth(&body)?;
            serde_json::from_slice(&body)
                .map_err(|e| Error::bad_request(format!("malformed DeleteOptions: {e}")))
        })
        .await?
    };
    let body_dry_run = match options.get("dryRun") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| {
                v.as_str().map(String::from).ok_or_else(|| {
                    Error::bad_field(
                        "dryRun",
                        "malformed DeleteOptions: dryRun must be a list of strings",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(Error::bad_field(
                "dryRun",
                "malformed DeleteOptions: dryRun must be a list of strings",
            ))
        }
    };
    let dry_run = validate_dry_run("DeleteOptions", &body_dry_run)? || dry_run;
    let policy = query
        .get("propagationPolicy")
        .map(String::as_str)
        .or_else(|| options.get("propagationPolicy").and_then(Value::as_str));
    let propagation_policy = match policy {
        None => None,
        Some("Orphan") => Some(PropagationPolicy::Orphan),
        Some("Background") => Some(PropagationPolicy::Background),
        Some("Foreground") => Some(PropagationPolicy::Foreground),
        Some(other) => {
            return Err(Error::bad_field(
                "propagationPolicy",
                format!("unsupported value {other:?}"),
            ))
        }
    };
    let preconditions = options.get("preconditions").map(|p| Preconditions {
        uid: p.get("uid").and_then(Value::as_str).map(String::from),
        resource_version: p
            .get("resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
    });
    Ok(DeleteParams {
        dry_run,
        grace_period_seconds: query
            .get("gracePeriodSeconds")
            .and_then(|s| s.parse().ok())
            .or_else(|| {
                options
                    .get("gracePeriodSeconds")
                    .and_then(Value::as_u64)
                    .map(|s| s as u32)
            }),
        propagation_policy,
        preconditions,
    })
}

/// The request's `fieldValidation` directive: `Strict`, `Warn` (the default, as in
/// Kubernetes) or `Ignore`.
///
/// Errors: [`Error::BadRequest`] naming `fieldValidation` for any other value.
pub(super) fn field_validation(
    query: &HashMap<String, String>,
) -> Result<ValidationDirective, Error> {
    match query.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(ValidationDirective::Warn),
        Some("Strict") => Ok(ValidationDirective::Strict),
        Some("Ignore") => Ok(ValidationDirective::Ignore),
        Some(other) => Err(Error::bad_field(
            "fieldValidation",
            format!(
                "invalid fieldValidation directive {other:?}: must be one of Ignore, Warn or Strict"
            ),
        )),
    }
}
