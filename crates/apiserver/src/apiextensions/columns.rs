//! Table columns (`kubectl get`) of kinds with printer columns of their own (a CRD's
//! `additionalPrinterColumns`): `Name`, then each column, its value read from the object with
//! a simple JSONPath (`.spec.replicas`, `.items[0].name`, `.items[*].name`,
//! `.status.conditions[?(@.type=="Ready")].status`). The table module asks [`printer`] first.

use capstan_api::ResourceInfo;
use serde_json::Value;

use crate::http::table::{self, Column, Printer};

/// The printer of `resource` when it has printer columns of its own: `Name`, then each
/// column; `None` for kinds without any (the table module's printers serve those).
pub fn printer(resource: &ResourceInfo) -> Option<Printer> {
    let columns = resource.printer_columns().to_vec();
    if columns.is_empty() {
        return None;
    }
    let definitions = std::iter::once(Column {
        name: "Name".into(),
        type_: "string".into(),
        format: "name".into(),
        description: "Name must be unique within a namespace. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names".into(),
        priority: 0,
    })
    .chain(columns.iter().map(|column| Column {
        name: column.name.clone(),
        type_: column.type_.clone(),
        format: column.format.clone(),
        description: column.description.clone(),
        priority: column.priority,
    }))
    .collect();
    Some(Printer {
        columns: definitions,
        cells: Box::new(move |object, now| {
            std::iter::once(object["metadata"]["name"].clone())
                .chain(
                    columns.iter().map(|column| {
                        cell(&column.type_, &evaluate(object, &column.json_path), now)
                    }),
                )
                .collect()
        }),
    })
}

/// One cell of a column of OpenAPI type `type_` from the values its path found: nothing is
/// `null` (`<none>`), dates read as ages (`5m`), several values are joined with commas.
fn cell(type_: &str, found: &[&Value], now: i64) -> Value {
    match found {
        [] => Value::Null,
        [value] => match (type_, value) {
            ("date", Value::String(time)) => time
                .parse::<capstan_api::k8s_openapi::jiff::Timestamp>()
                .map(|t| Value::String(table::human_duration(now - t.as_second())))
                .unwrap_or_else(|_| Value::String(time.clone())),
            ("integer", Value::Number(_)) | ("number", Value::Number(_)) => (*value).clone(),
            ("boolean", Value::Bool(_)) => (*value).clone(),
            (_, Value::String(s)) => Value::String(s.clone()),
            (_, other) => Value::String(other.to_string()),
        },
        several => Value::String(
            several
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

/// One step of a simple JSONPath.
#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.path == literal)]` (or `!=`).
    Filter {
        path: Vec<Step>,
        equal: bool,
        literal: Value,
    },
}

/// Every value `path` finds in `object`; an unreadable path finds nothing.
pub fn evaluate<'a>(object: &'a Value, path: &str) -> Vec<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let Some(steps) = parse(path) else {
        return Vec::new();
    };
    let mut current = vec![object];
    for step in &steps {
        current = current
            .into_iter()
            .flat_map(|value| apply(step, value))
            .collect();
    }
    current
}

fn apply<'a>(step: &Step, value: &'a Value) -> Vec<&'a Value> {
    match step {
        Step::Field(name) => value.get(name).into_iter().collect(),
        Step::Index(i) => value.get(*i).into_iter().collect(),
        Step::All => match value {
            Value::Array(items) => items.iter().collect(),
            Value::Object(map) => map.values().collect(),
            _ => Vec::new(),
        },
        Step::Filter {
            path,
            equal,
            literal,
        } => value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|item| {
                        let mut found = vec![*item];
                        for step in path {
                            found = found.into_iter().flat_map(|v| apply(step, v)).collect();
                        }
                        found.first().is_some_and(|v| (*v == literal) == *equal)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let name = &after[..end];
            if !name.is_empty() {
                steps.push(Step::Field(name.to_string()));
            }
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = closing_bracket(after)?;
            let inner = after[..end].trim();
            rest = &after[end + 1..];
            steps.push(if inner == "*" {
                Step::All
            } else if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')'))
            {
                parse_filter(filter)?
            } else if let Ok(i) = inner.parse() {
                Step::Index(i)
            } else {
                Step::Field(inner.trim_matches(['\'', '"']).to_string())
            });
        } else {
            return None;
        }
    }
    Some(steps)
}

/// Where the `]` closing a bracket that opened before `text` is, skipping quoted text.
fn closing_bracket(text: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_filter(filter: &str) -> Option<Step> {
    let (left, right, equal) = match (filter.split_once("!="), filter.split_once("==")) {
        (Some((l, r)), _) => (l, r, false),
        (None, Some((l, r))) => (l, r, true),
        _ => return None,
    };
    let path = parse(left.trim().strip_prefix('@')?)?;
    let right = right.trim();
    let literal = if let Some(s) = right
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| right.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
    {
        Value::String(s.to_string())
    } else {
        serde_json::from_str(right).ok()?
    };
    Some(Step::Filter {
        path,
        equal,
        literal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::resource::PrinterColumn;
    use serde_json::json;

    fn widget() -> Value {
        json!({
            "metadata": {"name": "w1", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "ports": [{"name": "http"}, {"name": "grpc"}]},
            "status": {"conditions": [
                {"type": "Synced", "status": "False"},
                {"type": "Ready", "status": "True"},
            ]},
        })
    }

    #[test]
    fn simple_paths_indexes_wildcards_and_filters_are_read() {
        let object = widget();
        assert_eq!(evaluate(&object, ".spec.replicas"), [&json!(3)]);
        assert_eq!(evaluate(&object, ".spec.ports[1].name"), [&json!("grpc")]);
        assert_eq!(evaluate(&object, ".spec.ports[*].name").len(), 2);
        assert_eq!(
            evaluate(&object, r#".status.conditions[?(@.type=="Ready")].status"#),
            [&json!("True")]
        );
        assert!(evaluate(&object, ".spec.missing").is_empty());
    }

    #[test]
    fn a_printer_shows_name_then_the_printer_columns() {
        let resource = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true)
            .with_printer_columns([
                PrinterColumn {
                    name: "Replicas".into(),
                    type_: "integer".into(),
                    json_path: ".spec.replicas".into(),
                    ..Default::default()
                },
                PrinterColumn {
                    name: "Ready".into(),
                    type_: "string".into(),
                    json_path: r#".status.conditions[?(@.type=="Ready")].status"#.into(),
                    ..Default::default()
                },
                PrinterColumn {
                    name: "Age".into(),
                    type_: "date".into(),
                    json_path: ".metadata.creationTimestamp".into(),
                    ..Default::default()
                },
            ]);
        let printer = printer(&resource).unwrap();
        let names: Vec<&str> = printer.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Name", "Replicas", "Ready", "Age"]);
        let now = 1_704_067_200 + 300;
        assert_eq!(
            (printer.cells)(&widget(), now),
            [json!("w1"), json!(3), json!("True"), json!("5m")]
        );
    }

    #[test]
    fn kinds_without_printer_columns_get_no_printer_here() {
        let resource = ResourceInfo::new("example.com", "v1", "Widget", "widgets", true);
        assert!(printer(&resource).is_none());
    }
}
