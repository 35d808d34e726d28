//! Watches: newline-delimited `WatchEvent`s, shaped as the client asked (tables, metadata).

use super::*;

/// Streams a watch as newline-delimited JSON `WatchEvent`s; an error ends the stream with an
/// `ERROR` event carrying its `Status`, including one that keeps the watch from starting
/// (see [`watch_failed`]); only bad parameters are refused with their own HTTP code. Objects go out as the watch cache encoded them, once
/// for every watcher; only tables (and kinds served without the cache) are encoded here.
pub(super) async fn watch(
    registry: Arc<Registry>,
    target: &Target,
    query: &HashMap<String, String>,
    output: Output,
) -> Result<Response, Error> {
    let timeout = match query.get("timeoutSeconds") {
        Some(timeout) => Some(timeout.parse().map_err(|_| {
            Error::bad_field("timeoutSeconds", format!("invalid timeout {timeout:?}"))
        })?),
        None => None,
    };
    let params = WatchParams {
        label_selector: query.get("labelSelector").cloned(),
        field_selector: query.get("fieldSelector").cloned(),
        bookmarks: query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true"),
        send_initial_events: query.get("sendInitialEvents").is_some_and(|v| v == "true"),
        timeout,
    };
    let resource_version = query.get("resourceVersion").cloned().unwrap_or_default();
    if output == Output::Object {
        let encoded = registry
            .watch_encoded(
                &target.resource,
                target.namespace.as_deref(),
                &params,
                &resource_version,
            )
            .await;
        let encoded = match encoded {
            Ok(encoded) => encoded,
            Err(error) => return watch_failed(error),
        };
        if let Some(events) = encoded {
            return stream_lines(events.map(|event| {
                event.map(|event| {
                    let mut line = Vec::with_capacity(event.object.len() + 32);
                    line.extend_from_slice(br#"{"type":""#);
                    line.extend_from_slice(event.event_type.as_bytes());
                    line.extend_from_slice(br#"","object":"#);
                    line.extend_from_slice(&event.object);
                    line.extend_from_slice(b"}\n");
                    Bytes::from(line)
                })
            }));
        }
    }
    let events = match registry
        .watch(
            &target.resource,
            target.namespace.as_deref(),
            &params,
            &resource_version,
        )
        .await
    {
        Ok(events) => events,
        Err(error) => return watch_failed(error),
    };
    let resource = target.resource.clone();
    let mut first = true;
    let lines = events.map(move |event| {
        event.map(|event| {
            // Objects become one-row Tables (the first carries the column definitions) or
            // their metadata, as negotiated.
            let event = if output == Output::Object {
                serde_json::to_value(&event).unwrap_or_default()
            } else {
                transformed_event(&resource, event, std::mem::take(&mut first), output)
            };
            let mut line = crate::protobuf::struct_order::to_vec(&event);
            line.push(b'\n');
            Bytes::from(line)
        })
    });
    stream_lines(lines)
}

/// Answers a watch that could not start. A malformed request (a selector that does not
/// parse: 400, or 422) is refused with its code, as before any stream; any other error (a
/// resourceVersion too old: 410, the store unavailable, ...) is what kube-apiserver sends
/// once the watch is accepted: `200`, then one `ERROR` event carrying the `Status`, then the
/// end. Clients such as client-go's reflector and kube-rs' watcher relist on that 410 event.
pub(super) fn watch_failed(error: Error) -> Result<Response, Error> {
    if matches!(error, Error::BadRequest { .. } | Error::Invalid { .. }) {
        return Err(error);
    }
    stream_lines(futures::stream::iter([Err(error)]))
}

/// The chunked response of a watch: each `Ok` item is one event's line; an error becomes an
/// `ERROR` event carrying its `Status`, and ends the stream, as in Kubernetes.
pub(super) fn stream_lines(
    lines: impl futures::Stream<Item = Result<Bytes, Error>> + Send + 'static,
) -> Result<Response, Error> {
    let mut ended = false;
    let lines = lines
        .take_while(move |line| {
            let keep = !ended;
            ended |= line.is_err();
            futures::future::ready(keep)
        })
        .map(|line| {
            Ok::<_, std::convert::Infallible>(line.unwrap_or_else(|error| {
                let mut line = Vec::new();
                crate::protobuf::struct_order::write_event(
                    &mut line,
                    "ERROR",
                    &status_json(&error),
                );
                line.push(b'\n');
                Bytes::from(line)
            }))
        });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(lines))
        .map_err(|e| Error::internal(e.to_string()))
}

/// A watch event whose object is transformed as `output` says: a one-row Table or a
/// `PartialObjectMetadata` (bookmarks and errors pass unchanged).
pub(super) fn transformed_event(
    resource: &ResourceInfo,
    event: capstan_api::kube_core::WatchEvent<DynamicObject>,
    with_columns: bool,
    output: Output,
) -> Value {
    use capstan_api::kube_core::WatchEvent;
    let (kind_name, object) = match event {
        WatchEvent::Added(object) => ("ADDED", object),
        WatchEvent::Modified(object) => ("MODIFIED", object),
        WatchEvent::Deleted(object) => ("DELETED", object),
        other => return serde_json::to_value(&other).unwrap_or_default(),
    };
    let metadata = serde_json::json!({
        "resourceVersion": object.metadata.resource_version.clone().unwrap_or_default(),
    });
    serde_json::json!({
        "type": kind_name,
        "object": transform(resource, &[to_value(&object)], metadata, output, Shape::Watch, with_columns, now()),
    })
}
