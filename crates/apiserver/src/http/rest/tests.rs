use super::*;

fn served() -> Vec<ResourceInfo> {
    ResourceInfo::builtins().collect()
}

#[test]
fn paths_resolve_to_kind_namespace_name_and_subresource() {
    let pods = resolve("/api/v1/namespaces/default/pods", &served()).unwrap();
    assert_eq!(
        (pods.resource.kind(), pods.namespace.as_deref(), pods.name),
        ("Pod", Some("default"), None)
    );
    let status = resolve(
        "/apis/apps/v1/namespaces/default/deployments/web/status",
        &served(),
    )
    .unwrap();
    assert_eq!(status.resource.kind(), "Deployment");
    assert_eq!(status.name.as_deref(), Some("web"));
    assert_eq!(status.subresource.as_deref(), Some("status"));
    let all = resolve("/api/v1/pods", &served()).unwrap();
    assert_eq!(all.namespace, None);
    let namespace = resolve("/api/v1/namespaces/default", &served()).unwrap();
    assert_eq!(
        (namespace.resource.kind(), namespace.name.as_deref()),
        ("Namespace", Some("default"))
    );
    let node = resolve("/api/v1/nodes/node01", &served()).unwrap();
    assert_eq!(node.resource.kind(), "Node");
}

#[test]
fn dry_run_accepts_only_all_and_reads_like_kubernetes_otherwise() {
    assert!(!validate_dry_run("CreateOptions", &[]).unwrap());
    assert!(validate_dry_run("CreateOptions", &["All".into(), "All".into()]).unwrap());
    let error = validate_dry_run("DeleteOptions", &["true".into()]).unwrap_err();
    assert_eq!(error.code(), 422);
    assert_eq!(
        error.to_string(),
        r#"DeleteOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: []string{"true"}: supported values: "All""#
    );
    let status = status_json(&error);
    assert_eq!(status["details"]["causes"][0]["field"], "dryRun");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueNotSupported"
    );
    let mixed = validate_dry_run("PatchOptions", &["All".into(), "x".into()]).unwrap_err();
    assert!(
        mixed.to_string().contains(r#"[]string{"All", "x"}"#),
        "{mixed}"
    );
}

#[test]
fn list_query_parameters_keep_every_repeat_percent_decoded() {
    assert_eq!(
        query_values("dryRun=All&limit=5&dryRun=tr%75e&dry%52un=a+b", "dryRun"),
        ["All", "true", "a b"]
    );
    assert!(query_values("", "dryRun").is_empty());
    assert_eq!(query_values("dryRun", "dryRun"), [""]);
}

#[test]
fn json_nesting_is_counted_outside_strings_only() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(check_json_depth(deep(MAX_NESTING_DEPTH).as_bytes()).is_ok());
    let error = check_json_depth(deep(MAX_NESTING_DEPTH + 1).as_bytes()).unwrap_err();
    assert_eq!(error.code(), 400);
    assert!(error.to_string().contains("nests deeper"), "{error}");
    let text = format!(r#"{{"a":"{}"[{{"}}"#, "[".repeat(500));
    assert!(check_json_depth(text.as_bytes()).is_ok());
    // Siblings do not add up.
    let wide = "[[]]".repeat(10_000);
    assert!(check_json_depth(format!("[{wide}]").as_bytes()).is_ok());
}

#[test]
fn yaml_nesting_counts_indentation_sequence_entries_and_flow_collections() {
    let manifest = b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {app: web, tier: \"[front\"}\nspec:\n  template:\n    spec:\n      containers:\n      - name: c\n        args: [\"a[\", 'b{']\n        command:\n        - sh\n        - -c\n        - |\n          for x in a b; do\n              echo [[[[[[ $x\n          done\n  # a comment with [[[[ brackets\n  replicas: 3 # [[[\n---\nkind: ConfigMap\ndata:\n  key: a[0]\n";
    assert!(check_yaml_depth(manifest).is_ok());
    let flow = format!(
        "a: {}{}",
        "[".repeat(MAX_NESTING_DEPTH),
        "]".repeat(MAX_NESTING_DEPTH)
    );
    assert!(check_yaml_depth(flow.as_bytes()).is_err());
    let mut block = String::new();
    for level in 0..=MAX_NESTING_DEPTH {
        block.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
    }
    assert!(check_yaml_depth(block.as_bytes()).is_err());
    let sequences = format!("{}x\n", "- ".repeat(MAX_NESTING_DEPTH + 1));
    assert!(check_yaml_depth(sequences.as_bytes()).is_err());
    let shallow = format!("{}x\n", "- ".repeat(MAX_NESTING_DEPTH / 2));
    assert!(check_yaml_depth(shallow.as_bytes()).is_ok());
}

#[test]
fn a_content_type_that_is_not_ascii_is_an_unsupported_media_type() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_bytes(b"application/json\xff").unwrap(),
    );
    let error = decode_value(&headers, b"{}").unwrap_err();
    assert_eq!(error.code(), 415);
    assert_eq!(decode_patch(&headers, b"{}").unwrap_err().code(), 415);
}

#[test]
fn unknown_or_misshapen_paths_are_not_found() {
    for path in [
        "/api/v2/pods",
        "/apis/apps/v1/widgets",
        "/api/v1/pods/web",
        "/api/v1/namespaces/default/nodes/node01",
        "/api/v1/namespaces/default/pods/web/status/extra",
        "/nonsense",
    ] {
        assert!(
            resolve(path, &served()).unwrap_err().is_not_found(),
            "{path}"
        );
    }
}
