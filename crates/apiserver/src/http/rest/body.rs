//! Request bodies: JSON, YAML and protobuf objects, patches, nesting limits.

use super::*;

/// Reads a request body as JSON or YAML (by content type) into an object of `resource`,
/// dropping the fields a built-in kind's schema does not know; returns them too.
///
/// Errors: [`Error::BadRequest`] for a malformed body, one that is not an object, one of
/// another kind than the path names, or, under `Strict` validation, one with unknown fields.
pub(super) async fn decode_object(
    headers: &HeaderMap,
    body: Bytes,
    resource: ResourceInfo,
    validation: ValidationDirective,
) -> Result<(DynamicObject, Vec<String>), Error> {
    let headers = headers.clone();
    off_thread(body.len(), move || {
        decode_object_now(&headers, &body, &resource, &validation)
    })
    .await
}

pub(super) fn decode_object_now(
    headers: &HeaderMap,
    body: &[u8],
    resource: &ResourceInfo,
    validation: &ValidationDirective,
) -> Result<(DynamicObject, Vec<String>), Error> {
    let mut value = if is_protobuf(headers)? {
        crate::protobuf::decode_object(body, &resource.api_version(), resource.kind())?
    } else {
        decode_value(headers, body)?
    };
    if !value.is_object() {
        return Err(Error::bad_request("the request body must be a JSON object"));
    }
    if let Some(kind) = value.get("kind").and_then(Value::as_str) {
        if kind != resource.kind() {
            return Err(Error::bad_field(
                "kind",
                format!(
                    "{kind} does not match the resource {}",
                    resource.qualified_resource()
                ),
            ));
        }
    }
    if let Some(api_version) = value.get("apiVersion").and_then(Value::as_str) {
        if api_version != resource.api_version() {
            return Err(Error::bad_field(
                "apiVersion",
                format!(
                    "{api_version} does not match the resource's version {}",
                    resource.api_version()
                ),
            ));
        }
    }
    let unknown = match Schemas::builtin().of(resource) {
        Some(schema) => schema.prune(&mut value, Keys::Object),
        None => Vec::new(),
    };
    if matches!(validation, ValidationDirective::Strict) && !unknown.is_empty() {
        return Err(strict_decoding_error(resource, &unknown));
    }
    let object = serde_json::from_value(value)
        .map_err(|e| Error::bad_request(format!("decoding the object: {e}")))?;
    Ok((object, unknown))
}

/// Reads a body as JSON or YAML. Errors: [`Error::UnsupportedMediaType`] for another content
/// type (protobuf object and `DeleteOptions` bodies are read before this, see [`is_protobuf`];
/// CBOR is not served), [`Error::BadRequest`] for a malformed body.
pub(super) fn decode_value(headers: &HeaderMap, body: &[u8]) -> Result<Value, Error> {
    let content_type = content_type(headers, "application/json")?;
    match content_type.split(';').next().unwrap_or_default().trim() {
        "application/json" | "" => {
            check_json_depth(body)?;
            serde_json::from_slice(body)
                .map_err(|e| Error::bad_request(format!("malformed JSON: {e}")))
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            check_yaml_depth(body)?;
            serde_yaml_ng::from_slice(body)
                .map_err(|e| Error::bad_request(format!("malformed YAML: {e}")))
        }
        other => Err(Error::UnsupportedMediaType {
            message: format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: application/json, application/yaml (got {other:?})"
            ),
        }),
    }
}

pub(super) fn decode_patch(headers: &HeaderMap, body: &[u8]) -> Result<Patch<Value>, Error> {
    let content_type = content_type(headers, "")?;
    if content_type.split(';').next().unwrap_or_default().trim() == "application/apply-patch+yaml" {
        // An applied configuration is YAML (JSON is YAML too).
        check_yaml_depth(body)?;
        let value: Value = serde_yaml_ng::from_slice(body)
            .map_err(|e| Error::bad_request(format!("error decoding YAML: {e}")))?;
        return Ok(Patch::Apply(value));
    }
    if is_protobuf(headers)? {
        // Kubernetes has no protobuf patches: 415 whatever the bytes are.
        return Err(Error::UnsupportedMediaType {
            message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {:?})", crate::protobuf::MEDIA_TYPE),
        });
    }
    check_json_depth(body)?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("malformed patch: {e}")))?;
    match content_type.split(';').next().unwrap_or_default().trim() {
        "application/merge-patch+json" => Ok(Patch::Merge(value)),
        "application/strategic-merge-patch+json" => Ok(Patch::Strategic(value)),
        "application/json-patch+json" => serde_json::from_value(value)
            .map(Patch::Json)
            .map_err(|e| Error::bad_request(format!("malformed JSON patch: {e}"))),
        other => Err(Error::UnsupportedMediaType {
            message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"),
        }),
    }
}

/// Whether the body is Kubernetes' protobuf (`application/vnd.kubernetes.protobuf`), which
/// object and `DeleteOptions` bodies may be (see [`crate::protobuf`]).
pub(super) fn is_protobuf(headers: &HeaderMap) -> Result<bool, Error> {
    let content_type = content_type(headers, "")?;
    Ok(content_type.split(';').next().unwrap_or_default().trim() == crate::protobuf::MEDIA_TYPE)
}

/// The request's `Content-Type`, or `default` when it has none.
///
/// Errors: [`Error::UnsupportedMediaType`] for a header that is not visible ASCII, which
/// names no media type this server knows.
pub(super) fn content_type<'h>(headers: &'h HeaderMap, default: &'h str) -> Result<&'h str, Error> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok(default),
        Some(value) => value.to_str().map_err(|_| Error::UnsupportedMediaType {
            message: format!(
                "the body of the request was in an unknown format - the Content-Type header \
                 {:?} is not a media type",
                String::from_utf8_lossy(value.as_bytes())
            ),
        }),
    }
}

/// The deepest nesting of lists and objects a request body may have: 100 levels.
///
/// serde_json refuses more than 127 on its own and serde_yaml_ng has no bound we rely on, so
/// every body is pre-scanned in linear time against this bound before any parse. Kubernetes'
/// own decoders allow more (10000), but no real manifest comes near 100: the deepest built-in
/// objects nest about 20 levels, and a CRD's schema with 30 nested `properties` about 70.
pub const MAX_NESTING_DEPTH: usize = 100;

/// Bodies above this size are parsed (and pruned) on a blocking thread, so a large body
/// never holds up the async workers that serve every other request.
pub const BLOCKING_PARSE_BYTES: usize = 64 * 1024;

pub(super) fn too_deep() -> Error {
    Error::bad_request(format!(
        "the request body nests deeper than the limit of {MAX_NESTING_DEPTH} levels"
    ))
}

/// Refuses a JSON body whose lists and objects nest deeper than [`MAX_NESTING_DEPTH`]: one
/// pass counting `[` and `{` outside strings. Malformed JSON passes; the parse reports it.
///
/// Errors: [`Error::BadRequest`] naming the limit.
pub(super) fn check_json_depth(body: &[u8]) -> Result<(), Error> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING_DEPTH {
                    return Err(too_deep());
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Refuses a YAML body nesting deeper than [`MAX_NESTING_DEPTH`], in one pass over its lines:
/// block nesting is the stack of indentation columns (each `- ` sequence entry opens one
/// more), plus the depth of flow collections (`[`, `{`) outside quotes and comments. Block
/// scalars (`|`, `>`) are text and skipped. It errs on the side of counting a level too
/// many, never too few.
///
/// Errors: [`Error::BadRequest`] naming the limit.
pub(super) fn check_yaml_depth(body: &[u8]) -> Result<(), Error> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<u8> = None;
    // The indentation of the line that opened a block scalar, while inside it.
    let mut block_scalar: Option<usize> = None;
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let mut rest = &line[indent..];
        if let Some(parent) = block_scalar {
            if rest.is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        if quote.is_none() && flow == 0 {
            if rest.is_empty() || rest[0] == b'#' {
                continue;
            }
            if indent == 0 && (rest.starts_with(b"---") || rest.starts_with(b"...")) {
                indents.clear();
                continue;
            }
            while indents.last().is_some_and(|&top| top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            // `- - item`: each sequence entry nests one level deeper.
            let mut column = indent;
            while rest.first() == Some(&b'-') && matches!(rest.get(1), None | Some(b' ')) {
                let spaces = rest[1..].iter().take_while(|&&b| b == b' ').count();
                column += 1 + spaces;
                rest = &rest[1 + spaces..];
                indents.push(column);
            }
        }
        let mut previous = b' ';
        let mut last = b' ';
        let mut escaped = false;
        for (index, &byte) in rest.iter().enumerate() {
            if let Some(open) = quote {
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' if open == b'"' => escaped = true,
                    _ if byte == open => quote = None,
                    _ => {}
                }
                previous = byte;
                continue;
            }
            match byte {
                b'#' if previous == b' ' || previous == b'\t' || index == 0 => break,
                b'"' | b'\'' if flow > 0 || matches!(last, b' ' | b':' | b'-' | b',') => {
                    quote = Some(byte)
                }
                b'[' | b'{' if flow > 0 || matches!(last, b' ' | b':' | b'-' | b'?') => {
                    flow += 1;
                }
                b']' | b'}' if flow > 0 => flow -= 1,
                _ => {}
            }
            if indents.len() + flow > MAX_NESTING_DEPTH {
                return Err(too_deep());
            }
            previous = byte;
            if byte != b' ' && byte != b'\t' {
                last = byte;
            }
        }
        if indents.len() + flow > MAX_NESTING_DEPTH {
            return Err(too_deep());
        }
        // `key: |`, `key: >-`, `- |2`: the lines below, indented more, are text.
        if quote.is_none() && flow == 0 {
            let trimmed = rest.trim_ascii_end();
            let indicator = trimmed
                .iter()
                .rposition(|&b| b == b'|' || b == b'>')
                .filter(|&at| {
                    trimmed[at + 1..]
                        .iter()
                        .all(|b| matches!(b, b'-' | b'+' | b'0'..=b'9'))
                        && (at == 0 || matches!(trimmed[at - 1], b' ' | b':' | b'-'))
                });
            if indicator.is_some() {
                block_scalar = Some(indent);
            }
        }
    }
    Ok(())
}

/// Runs `parse` on a blocking thread when `len` is over [`BLOCKING_PARSE_BYTES`], inline
/// otherwise.
pub(super) async fn off_thread<T: Send + 'static>(
    len: usize,
    parse: impl FnOnce() -> T + Send + 'static,
) -> T {
    if len <= BLOCKING_PARSE_BYTES {
        return parse();
    }
    match tokio::task::spawn_blocking(parse).await {
        Ok(parsed) => parsed,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
