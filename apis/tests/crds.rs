//! Offline proof that every CRD we ship is a valid, structural `apiextensions.k8s.io/v1` CRD
//! that follows the Crossplane conventions we promise. The apiserver-backed checks of the CEL
//! rules live with the local test environment; these run anywhere in milliseconds.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Managed-resource kinds: everything in `package/crds` except the config kinds.
const MANAGED_KINDS: &[&str] = &["Database", "Login", "User", "Schema"];
/// The only non-MR kinds Crossplane's converter leaves alone in a provider package.
const CONFIG_KINDS: &[&str] = &["ProviderConfig", "ClusterProviderConfig", "ProviderConfigUsage"];
/// Schema paths allowed to keep unknown fields (documented as schemaless on purpose).
const PRESERVE_UNKNOWN_ALLOWED: &[&str] = &["WorkItem:.spec.desired", "WorkItem:.status.atProvider"];

struct Crd {
    file: PathBuf,
    typed: CustomResourceDefinition,
    raw: Value,
}

fn load(dir: &str) -> Vec<Crd> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let typed: CustomResourceDefinition = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not an apiextensions/v1 CRD: {e}", file.display()));
        let raw: Value = serde_saphyr::from_str(&text).unwrap();
        out.push(Crd { file, typed, raw });
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

fn all() -> Vec<Crd> {
    let mut crds = load("package/crds");
    crds.extend(load("apis/crds"));
    crds
}

fn schema(crd: &Crd) -> &Value {
    &crd.raw["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

/// Walks a schema, calling `f(path, node)` for every node.
fn walk<'a>(path: String, node: &'a Value, f: &mut dyn FnMut(&str, &'a Value)) {
    f(&path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(format!("{path}.{name}"), child, f);
        }
    }
    if let Some(items) = node.get("items") {
        walk(format!("{path}[]"), items, f);
    }
    if let Some(additional) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(format!("{path}{{}}"), additional, f);
    }
}

#[test]
fn package_holds_exactly_the_managed_and_config_kinds() {
    let mut kinds: Vec<String> = load("package/crds")
        .iter()
        .map(|c| c.typed.spec.names.kind.clone())
        .collect();
    kinds.sort();
    let mut want: Vec<String> = MANAGED_KINDS
        .iter()
        .chain(CONFIG_KINDS)
        .map(|s| s.to_string())
        .collect();
    want.sort();
    // Crossplane turns any other CRD in a provider package into a managed resource.
    assert_eq!(kinds, want);
}

#[test]
fn names_and_groups_are_consistent() {
    for crd in all() {
        let spec = &crd.typed.spec;
        assert_eq!(
            crd.typed.metadata.name.as_deref(),
            Some(format!("{}.{}", spec.names.plural, spec.group).as_str())
        );
        let file = crd.file.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            file,
            format!("{}_{}.yaml", spec.group, spec.names.plural),
            "file naming convention"
        );
        assert_eq!(spec.versions.len(), 1, "{file}: one version, v1alpha1");
        assert_eq!(spec.versions[0].name, apis::constants::VERSION);
        let group = if spec.names.kind == "WorkItem" {
            apis::constants::QUEUE_GROUP
        } else {
            apis::constants::GROUP
        };
        assert_eq!(spec.group, group, "{file}");
    }
}

#[test]
fn every_node_is_typed_and_described() {
    for crd in all() {
        let kind = crd.typed.spec.names.kind.clone();
        let mut problems = Vec::new();
        walk(String::new(), schema(&crd), &mut |path, node| {
            let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
            if node.get("type").is_none() && !int_or_string {
                problems.push(format!("{path}: no type (not structural)"));
            }
            let is_builtin = matches!(path, ".apiVersion" | ".kind" | ".metadata");
            let inside_map_or_list = path.ends_with('}') || path.ends_with(']');
            if node
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
                && !is_builtin
                && !inside_map_or_list
                && !path.is_empty()
            {
                problems.push(format!("{path}: no description"));
            }
            if node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
                && !PRESERVE_UNKNOWN_ALLOWED.contains(&format!("{kind}:{path}").as_str())
            {
                problems.push(format!("{path}: preserves unknown fields (a hole in validation)"));
            }
            for key in ["oneOf", "allOf", "not"] {
                if node.get(key).is_some() {
                    problems.push(format!("{path}: {key} is not structural-friendly; use CEL"));
                }
            }
            if node.get("anyOf").is_some() && !int_or_string {
                problems.push(format!("{path}: anyOf only for int-or-string"));
            }
            if let Some(rules) = node.get("x-kubernetes-validations").and_then(Value::as_array) {
                for rule in rules {
                    let message = rule.get("message").and_then(Value::as_str).unwrap_or_default();
                    if message.len() < 10 {
                        problems.push(format!(
                            "{path}: CEL rule {} has no user-facing message",
                            rule["rule"]
                        ));
                    }
                }
            }
            if let (Some(default), Some(values)) =
                (node.get("default"), node.get("enum").and_then(Value::as_array))
                && !values.contains(default)
            {
                problems.push(format!("{path}: default {default} is not in its enum"));
            }
        });
        assert!(
            problems.is_empty(),
            "{}:\n  {}",
            crd.file.display(),
            problems.join("\n  ")
        );
    }
}

/// Resolves a printer-column JSONPath like `.status.conditions[?(@.type=='Ready')].status`
/// against the schema.
fn path_exists(schema: &Value, json_path: &str) -> bool {
    if json_path.starts_with(".metadata.") {
        return true;
    }
    let mut node = schema;
    let mut rest = json_path;
    while let Some(stripped) = rest.strip_prefix('.') {
        let end = stripped.find(['.', '[']).unwrap_or(stripped.len());
        let name = &stripped[..end];
        let Some(next) = node.get("properties").and_then(|p| p.get(name)) else {
            return false;
        };
        node = next;
        rest = &stripped[end..];
        if rest.starts_with('[') {
            let Some(close) = rest.find(']') else { return false };
            let Some(items) = node.get("items") else {
                return false;
            };
            node = items;
            rest = &rest[close + 1..];
        }
    }
    rest.is_empty()
}

#[test]
fn printer_columns_point_into_the_schema() {
    for crd in all() {
        let version = &crd.typed.spec.versions[0];
        for column in version.additional_printer_columns.iter().flatten() {
            assert!(
                path_exists(schema(&crd), &column.json_path),
                "{}: column {} has JSONPath {} that is not in the schema",
                crd.file.display(),
                column.name,
                column.json_path
            );
        }
    }
}

#[test]
fn path_resolution_can_fail() {
    // Guards the guard: a path that is not in the schema must be reported.
    let crd = all()
        .into_iter()
        .find(|c| c.typed.spec.names.kind == "Database")
        .unwrap();
    assert!(path_exists(
        schema(&crd),
        ".status.conditions[?(@.type=='Ready')].status"
    ));
    assert!(!path_exists(schema(&crd), ".status.atProvider.nope"));
    assert!(!path_exists(schema(&crd), ".spec.forProvider.collation.deeper"));
}

#[test]
fn managed_resources_follow_crossplane_conventions() {
    let crds = load("package/crds");
    let managed: Vec<&Crd> = crds
        .iter()
        .filter(|c| MANAGED_KINDS.contains(&c.typed.spec.names.kind.as_str()))
        .collect();
    assert_eq!(managed.len(), MANAGED_KINDS.len());
    let first = schema(managed[0]);
    for crd in &managed {
        let spec = &crd.typed.spec;
        let file = crd.file.display();
        assert_eq!(
            spec.scope, "Namespaced",
            "{file}: v2 managed resources are namespaced"
        );
        assert_eq!(
            spec.names.categories.as_deref(),
            Some(&["crossplane".to_string(), "managed".into(), "sqlserver".into()][..]),
            "{file}: uptest deletes with `kubectl wait managed --all`"
        );
        let version = &spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{file}: status subresource"
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(&columns[..3], ["READY", "SYNCED", "EXTERNAL-NAME"], "{file}");
        assert_eq!(columns.last(), Some(&"AGE"), "{file}");

        let s = schema(crd);
        let spec_props = &s["properties"]["spec"]["properties"];
        assert!(
            spec_props.get("deletionPolicy").is_none(),
            "{file}: namespaced MRs have no deletionPolicy"
        );
        assert_eq!(
            spec_props["managementPolicies"]["default"],
            serde_json::json!(["*"]),
            "{file}"
        );
        assert_eq!(
            spec_props["providerConfigRef"]["default"],
            serde_json::json!({"kind": "ClusterProviderConfig", "name": "default"}),
            "{file}"
        );
        // The common pieces are written once in spirit: identical in every kind.
        for common in ["managementPolicies", "providerConfigRef"] {
            assert_eq!(
                spec_props[common], first["properties"]["spec"]["properties"][common],
                "{file}: {common}"
            );
        }
        let status = &s["properties"]["status"]["properties"];
        assert_eq!(
            status["conditions"], first["properties"]["status"]["properties"]["conditions"],
            "{file}"
        );
        assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map", "{file}");
        assert!(
            status["atProvider"]["properties"].get("id").is_some(),
            "{file}: uptest's import step reads atProvider.id"
        );
        assert!(status.get("observedGeneration").is_some(), "{file}");
    }
}

/// The first place where `a` and `b` differ, comparing numbers by value (the typed model
/// stores `minimum: 1` as `1.0`).
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            (x.as_f64() != y.as_f64()).then(|| format!("{path}: {x} vs {y}"))
        }
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                match (x.get(key), y.get(key)) {
                    (Some(l), Some(r)) => {
                        if let Some(d) = first_difference(&format!("{path}.{key}"), l, r) {
                            return Some(d);
                        }
                    }
                    (l, r) => return Some(format!("{path}.{key}: {l:?} vs {r:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (l, r))| first_difference(&format!("{path}[{i}]"), l, r)),
        _ => (a != b).then(|| format!("{path}: {a} vs {b}")),
    }
}

#[test]
fn crd_yaml_round_trips_through_the_typed_model() {
    // A field the typed model does not know would be dropped here: catches typos such as
    // `x-kubernetes-validation` or `additionalPrinterColumn` that the apiserver would also drop.
    for crd in all() {
        let back = serde_json::to_value(&crd.typed).unwrap();
        if let Some(difference) = first_difference("", &crd.raw, &back) {
            panic!(
                "{}: changed by the typed model at {difference}",
                crd.file.display()
            );
        }
    }
}

#[test]
fn difference_finder_finds_dropped_fields() {
    let raw = serde_json::json!({"a": {"minimum": 1, "x-kubernetes-validation": []}});
    let back = serde_json::json!({"a": {"minimum": 1.0}});
    assert!(
        first_difference("", &raw, &back)
            .unwrap()
            .contains("x-kubernetes-validation")
    );
    assert!(first_difference("", &serde_json::json!({"m": 1}), &serde_json::json!({"m": 1.0})).is_none());
}
