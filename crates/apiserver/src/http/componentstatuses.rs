//! `componentstatuses` (core v1, `kubectl get cs`): read-only, computed on each request.
//!
//! kube-apiserver (deprecated since 1.19, still served) probes etcd and the
//! `controller-manager` and `scheduler` on their fixed local ports. Capstan's store is probed
//! with the same check as `/readyz`'s `etcd` ([`StoreCheck`]) and reported as `etcd-0`. The
//! controller manager and the scheduler are separate components with no local health port
//! the API server could probe, so they are omitted rather than reported as failing. Every
//! answer carries kube-apiserver's deprecation warning.

use std::sync::Arc;

use axum::extract::{Path, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use capstan_api::health::HealthCheck;
use capstan_api::Error;
use serde_json::{json, Value};

use crate::http::status::ApiError;
use crate::metrics::StoreCheck;
use crate::registry::Registry;

/// The warning kube-apiserver adds to every componentstatuses answer.
pub const DEPRECATION_WARNING: &str = "299 - \"v1 ComponentStatus is deprecated in v1.19+\"";

/// The name kube-apiserver gives its (first) etcd server.
pub const STORE_COMPONENT: &str = "etcd-0";

/// The routes of `/api/v1/componentstatuses[/<name>]` over `registry`'s store.
pub fn routes<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> Router<S> {
    let for_list = registry.clone();
    Router::new()
        .route(
            "/api/v1/componentstatuses",
            get(move |request: Request| {
                let registry = for_list.clone();
                async move {
                    let statuses = statuses(&registry).await;
                    answer(&request, statuses)
                }
            }),
        )
        .route(
            "/api/v1/componentstatuses/{name}",
            get(move |Path(name): Path<String>, request: Request| {
                let registry = registry.clone();
                async move {
                    match statuses(&registry)
                        .await
                        .into_iter()
                        .find(|status| status["metadata"]["name"] == name.as_str())
                    {
                        Some(status) => answer_one(&request, status),
                        None => ApiError(Error::NotFound {
                            resource: "componentstatuses".into(),
                            name,
                        })
                        .into_response(),
                    }
                }
            }),
        )
}

/// The ComponentStatus objects, probed now.
pub async fn statuses(registry: &Registry) -> Vec<Value> {
    let store = StoreCheck::new(registry.store().clone());
    vec![component_status(STORE_COMPONENT, store.check().await)]
}

/// One ComponentStatus: `Healthy` `True` with kube-apiserver's etcd message, or `False`
/// with the failure as its `error`.
pub fn component_status(name: &str, health: Result<(), String>) -> Value {
    let condition = match health {
        Ok(()) => json!({
            "type": "Healthy",
            "status": "True",
            "message": "ok",
        }),
        Err(error) => json!({
            "type": "Healthy",
            "status": "False",
            "error": error,
        }),
    };
    json!({
        "kind": "ComponentStatus",
        "apiVersion": "v1",
        "metadata": {"name": name},
        "conditions": [condition],
    })
}

/// Whether the client asked for a `meta.k8s.io` Table (what `kubectl get` asks for).
pub fn wants_table(request: &Request) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"))
}

/// A `meta.k8s.io/v1` Table of `rows` (cells, object) under `columns` (name, type,
/// description).
pub fn table(columns: &[(&str, &str, &str)], rows: Vec<(Vec<Value>, &Value)>) -> Value {
    let columns: Vec<Value> = columns
        .iter()
        .enumerate()
        .map(|(index, (name, type_, description))| {
            json!({
                "name": name,
                "type": type_,
                "format": if index == 0 { "name" } else { "" },
                "description": description,
                "priority": 0,
            })
        })
        .collect();
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(cells, object)| {
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object["metadata"].clone(),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": ""},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

const COLUMNS: [(&str, &str, &str); 4] = [
    ("Name", "string", "Name of the component"),
    ("Status", "string", "Status of the component conditions"),
    ("Message", "string", "Message of the component conditions"),
    ("Error", "string", "Error of the component conditions"),
];

fn row(status: &Value) -> Vec<Value> {
    let condition = &status["conditions"][0];
    let text = |field: &str| Value::from(condition[field].as_str().unwrap_or_default());
    let healthy = if condition["status"] == "True" {
        "Healthy"
    } else {
        "Unhealthy"
    };
    vec![
        status["metadata"]["name"].clone(),
        healthy.into(),
        text("message"),
        text("error"),
    ]
}

fn with_warning(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::WARNING,
        HeaderValue::from_static(DEPRECATION_WARNING),
    );
    response
}

fn answer(request: &Request, statuses: Vec<Value>) -> Response {
    let body = if wants_table(request) {
        table(
            &COLUMNS,
            statuses
                .iter()
                .map(|status| (row(status), status))
                .collect(),
        )
    } else {
        json!({
            "kind": "ComponentStatusList",
            "apiVersion": "v1",
            "metadata": {},
            "items": statuses,
        })
    };
    with_warning((StatusCode::OK, Json(body)).into_response())
}

fn answer_one(request: &Request, status: Value) -> Response {
    let body = if wants_table(request) {
        table(&COLUMNS, vec![(row(&status), &status)])
    } else {
        status
    };
    with_warning((StatusCode::OK, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_store_reads_as_kube_apiserver_reports_etcd() {
        let status = component_status(STORE_COMPONENT, Ok(()));
        assert_eq!(status["metadata"]["name"], "etcd-0");
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(
            row(&status),
            vec![json!("etcd-0"), json!("Healthy"), json!("ok"), json!("")]
        );
    }

    #[test]
    fn a_failing_store_is_unhealthy_with_its_error() {
        let status = component_status(STORE_COMPONENT, Err("the store is unreachable".into()));
        assert_eq!(status["conditions"][0]["status"], "False");
        assert_eq!(row(&status)[1], "Unhealthy");
        assert_eq!(row(&status)[3], "the store is unreachable");
    }

    #[tokio::test]
    async fn the_memory_store_is_healthy() {
        let registry = crate::testing::registry();
        let statuses = statuses(&registry).await;
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0]["conditions"][0]["status"], "True");
    }
}
