//! Server-side printing: `as=Table` responses, so `kubectl get` shows Kubernetes' columns.
//!
//! kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` (see
//! [`super::negotiation`]). The server answers a `meta.k8s.io` `Table`: column definitions
//! (priority 0 always shown, higher ones with `-o wide`) and one row per object, each
//! carrying what `includeObject` asks of the object (its metadata as a
//! `PartialObjectMetadata` by default). Every row has the cells of every column, wide ones
//! included, as kube-apiserver prints them.
//!
//! [`printer`] is the one place that picks a kind's columns: the built-in kinds follow
//! Kubernetes' printers ([`core`], [`workloads`], [`cluster`],
//! [`certificates`]); any other kind gets
//! kube-apiserver's default table, NAME and CREATED AT.

mod certificates;
mod cluster;
mod core;
mod format;
mod workloads;

use capstan_api::ResourceInfo;
use serde_json::{json, Value};

use super::negotiation::{partial_object_metadata, MetaVersion};
pub use format::human_duration;

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The header, e.g. `Ready`; kubectl prints it in capitals.
    pub name: String,
    /// The OpenAPI type of the cells: `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// A format hint: `name` for the column naming the object, else empty.
    pub format: String,
    /// What the column shows.
    pub description: String,
    /// 0: always shown; higher: shown with `-o wide`.
    pub priority: i32,
}

/// A built-in column: name, type and priority.
type ColumnSpec = (&'static str, &'static str, i32);

/// The cells of one object's row, as of `now` (seconds since the epoch).
pub type Cells = Box<dyn Fn(&Value, i64) -> Vec<Value> + Send + Sync>;

/// How the objects of one kind are printed: the columns, and each row's cells in their order.
pub struct Printer {
    /// The column definitions.
    pub columns: Vec<Column>,
    /// One row's cells, one per column.
    pub cells: Cells,
}

impl Printer {
    fn builtin(columns: &[ColumnSpec], cells: fn(&Value, i64) -> Vec<Value>) -> Self {
        Printer {
            columns: columns
                .iter()
                .map(|(name, type_, priority)| Column {
                    name: name.to_string(),
                    type_: type_.to_string(),
                    format: if *name == "Name" { "name" } else { "" }.to_string(),
                    description: String::new(),
                    priority: *priority,
                })
                .collect(),
            cells: Box::new(cells),
        }
    }

    /// kube-apiserver's table for kinds without a printer of their own: the name and the
    /// creation time (RFC 3339).
    pub fn default_columns() -> Self {
        Printer::builtin(
            &[("Name", "string", 0), ("Created At", "date", 0)],
            |object, _| {
                vec![
                    format::string(&object["metadata"]["name"]),
                    format::string(&object["metadata"]["creationTimestamp"]),
                ]
            },
        )
    }
}

/// The printer of `resource`'s kind: Kubernetes' for a built-in kind, the default table
/// otherwise.
pub fn printer(resource: &ResourceInfo) -> Printer {
    // A kind with printer columns of its own (a CRD's `additionalPrinterColumns`).
    if let Some(printer) = crate::apiextensions::columns::printer(resource) {
        return printer;
    }
    builtin_printer(resource.group(), resource.kind()).unwrap_or_else(Printer::default_columns)
}

/// Kubernetes' printer of the built-in `kind` of `group`, if it has one.
fn builtin_printer(group: &str, kind: &str) -> Option<Printer> {
    core::printer(group, kind)
        .or_else(|| workloads::printer(group, kind))
        .or_else(|| cluster::printer(group, kind))
        .or_else(|| certificates::printer(group, kind))
        .map(|(columns, cells)| Printer::builtin(columns, cells))
}

/// The column definitions of `printer`, as a Table carries them.
pub fn column_definitions(printer: &Printer) -> Value {
    Value::Array(
        printer
            .columns
            .iter()
            .map(|column| {
                json!({
                    "name": column.name,
                    "type": column.type_,
                    "format": column.format,
                    "description": column.description,
                    "priority": column.priority,
                })
            })
            .collect(),
    )
}

/// What each row carries of its object: the `includeObject` query parameter (Kubernetes'
/// `IncludeObjectPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object (`None`).
    None,
    /// The object's metadata, as a `PartialObjectMetadata` (`Metadata`, the default).
    #[default]
    Metadata,
    /// The whole object (`Object`): kubectl asks for it to sort rows (`--sort-by`).
    Object,
}

impl IncludeObject {
    /// The policy a query value names; `None` for a value Kubernetes does not define.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "None" => Some(IncludeObject::None),
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// How a Table is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    /// The `meta.k8s.io` version asked for.
    pub version: MetaVersion,
    /// What each row carries of its object.
    pub include: IncludeObject,
    /// Whether the column definitions are written (watch events after the first leave them
    /// out, as kube-apiserver does).
    pub with_columns: bool,
    /// The time ages are computed against, in seconds since the epoch.
    pub now: i64,
}

/// One row for `object`, printed by `printer`, carrying what `options.include` asks.
pub fn row(printer: &Printer, object: &Value, options: &TableOptions) -> Value {
    let mut row = json!({ "cells": (printer.cells)(object, options.now) });
    match options.include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = partial_object_metadata(object, options.version);
        }
        IncludeObject::Object => row["object"] = object.clone(),
    }
    row
}

/// A whole Table of `objects` of `resource`'s kind; `list_metadata` is copied
/// (resourceVersion, continue).
pub fn table(
    resource: &ResourceInfo,
    objects: &[Value],
    list_metadata: Value,
    options: &TableOptions,
) -> Value {
    let printer = printer(resource);
    json!({
        "kind": "Table",
        "apiVersion": options.version.api_version(),
        "metadata": list_metadata,
        "columnDefinitions": if options.with_columns {
            column_definitions(&printer)
        } else {
            Value::Array(Vec::new())
        },
        "rows": objects
            .iter()
            .map(|object| row(&printer, object, options))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests;
