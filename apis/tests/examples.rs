//! Every manifest under `examples/` must stay a valid object of this API, so the examples can
//! never drift from it: each document is parsed into its generated type (and must lose no
//! field on the way, which catches misspelled or removed fields), converted into the
//! validated request type the provider builds (`Managed::try_from`, `ServerConfig::try_from`),
//! and checked for what makes the set usable as a whole: references and configs that resolve
//! within the examples, no clashing names, no Secrets (passwords are never committed), and
//! uptest annotations that uptest can use.
//!
//! The apiserver's side (schemas, defaults, CEL rules) is checked by the kuttl suite
//! `kuttl-tests/cel`, which applies every example with a server-side dry run.

use apis::{
    config::ServerConfig,
    generated::{
        clusterproviderconfigs::ClusterProviderConfig, databases::Database, logins::Login,
        providerconfigs::ProviderConfig, schemas::Schema, users::User,
    },
    request::{ConfigKind, Managed, Target},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    path::{Path, PathBuf},
};

const GROUP_VERSION: &str = "sqlserver.kubesql.io/v1alpha1";

/// One YAML document of one example file.
struct Doc {
    /// File, relative to the repository root (for messages).
    file: String,
    /// The document as written.
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
    fn namespace(&self) -> &str {
        self.value["metadata"]["namespace"].as_str().unwrap_or_default()
    }
    fn annotation(&self, key: &str) -> Option<&str> {
        self.value["metadata"]["annotations"][key].as_str()
    }
    fn labels(&self) -> BTreeMap<String, String> {
        serde_json::from_value(self.value["metadata"]["labels"].clone()).unwrap_or_default()
    }
    fn is_managed(&self) -> bool {
        matches!(self.kind(), "Database" | "Login" | "User" | "Schema")
    }
    fn at(&self) -> String {
        format!("{} ({} {})", self.file, self.kind(), self.name())
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("apis lives one level below the workspace root")
        .to_path_buf()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
}

/// Every document of every `*.yaml` under `examples/`.
fn examples() -> Vec<Doc> {
    let root = repo_root();
    let mut files = Vec::new();
    yaml_files(&root.join("examples"), &mut files);
    // examples/composition/ holds Crossplane kinds (XRD, Compositions, Functions, an XR), not
    // this API's: `cargo xtask crossplane` renders and validates those.
    files.retain(|f| !f.starts_with(root.join("examples").join("composition")));
    assert!(!files.is_empty(), "no example manifests found");
    let mut docs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        let values: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
        assert!(!values.is_empty(), "{file} holds no document");
        for value in values {
            assert!(value.is_object(), "{file}: a document is not an object");
            docs.push(Doc {
                file: file.clone(),
                value,
            });
        }
    }
    docs
}

/// Parses `doc` into `T` and checks that serializing it back keeps every field written, so a
/// field the API does not know (a typo, a removed field) fails here instead of being dropped.
fn typed<T: DeserializeOwned + Serialize>(doc: &Doc) -> T {
    let value: T = serde_json::from_value(doc.value.clone())
        .unwrap_or_else(|e| panic!("{}: does not parse into the API type: {e}", doc.at()));
    let back = serde_json::to_value(&value).unwrap();
    if let Err(path) = subset(&doc.value, &back, String::new()) {
        panic!(
            "{}: field {path} is not part of the API (or lost its value in the generated type)",
            doc.at()
        );
    }
    value
}

/// Whether everything in `written` is also in `parsed` (maps: every key; lists: same length,
/// element by element).
fn subset(written: &Value, parsed: &Value, path: String) -> Result<(), String> {
    match (written, parsed) {
        (Value::Object(w), Value::Object(p)) => w.iter().try_for_each(|(k, v)| {
            let path = format!("{path}.{k}");
            match p.get(k) {
                Some(pv) => subset(v, pv, path),
                None => Err(path),
            }
        }),
        (Value::Array(w), Value::Array(p)) if w.len() == p.len() => w
            .iter()
            .zip(p)
            .enumerate()
            .try_for_each(|(i, (w, p))| subset(w, p, format!("{path}[{i}]"))),
        (Value::Number(w), Value::Number(p)) => (w.as_f64() == p.as_f64()).then_some(()).ok_or(path),
        (w, p) => (w == p).then_some(()).ok_or(path),
    }
}

/// The validated conversion of one managed resource, reduced to what the set-wide checks need.
struct Converted {
    config: (ConfigKind, String),
    external_name: String,
    /// `(referenced kind, target)` for every reference or selector.
    targets: Vec<(&'static str, Target)>,
}

fn convert_managed(doc: &Doc) -> Converted {
    fn fail(doc: &Doc, e: impl std::fmt::Display) -> ! {
        panic!("{}: rejected by the request types: {e}", doc.at())
    }
    fn done<T>(m: Managed<T>, targets: Vec<(&'static str, Target)>) -> Converted {
        Converted {
            config: (m.config.kind, m.config.name),
            external_name: m.external_name.as_str().to_owned(),
            targets,
        }
    }
    match doc.kind() {
        "Database" => {
            let m = Managed::try_from(&typed::<Database>(doc)).unwrap_or_else(|e| fail(doc, e));
            done(m, vec![])
        }
        "Login" => {
            let m = Managed::try_from(&typed::<Login>(doc)).unwrap_or_else(|e| fail(doc, e));
            done(m, vec![])
        }
        "User" => {
            let m = Managed::try_from(&typed::<User>(doc)).unwrap_or_else(|e| fail(doc, e));
            let mut targets = vec![("Database", m.for_provider.database.clone())];
            if let apis::request::UserKind::ForLogin { login } = &m.for_provider.kind {
                targets.push(("Login", login.clone()));
            }
            done(m, targets)
        }
        "Schema" => {
            let m = Managed::try_from(&typed::<Schema>(doc)).unwrap_or_else(|e| fail(doc, e));
            let mut targets = vec![("Database", m.for_provider.database.clone())];
            if let Some(owner) = &m.for_provider.owner {
                targets.push(("User", owner.clone()));
            }
            done(m, targets)
        }
        other => unreachable!("not a managed kind: {other}"),
    }
}

fn convert_config(doc: &Doc) -> ServerConfig {
    let result = match doc.kind() {
        "ProviderConfig" => ServerConfig::try_from(&typed::<ProviderConfig>(doc)),
        "ClusterProviderConfig" => ServerConfig::try_from(&typed::<ClusterProviderConfig>(doc)),
        other => unreachable!("not a config kind: {other}"),
    };
    result.unwrap_or_else(|e| panic!("{}: rejected by ServerConfig: {e}", doc.at()))
}

#[test]
fn every_example_is_a_valid_object_of_the_api() {
    let docs = examples();
    let mut managed = 0;
    let mut configs = 0;
    for doc in &docs {
        assert_eq!(
            doc.value["apiVersion"].as_str(),
            Some(GROUP_VERSION),
            "{}: examples only hold this provider's kinds",
            doc.at()
        );
        assert!(!doc.name().is_empty(), "{}: metadata.name is required", doc.at());
        match doc.kind() {
            "Database" | "Login" | "User" | "Schema" => {
                convert_managed(doc);
                managed += 1;
            }
            "ProviderConfig" | "ClusterProviderConfig" => {
                convert_config(doc);
                configs += 1;
            }
            other => panic!(
                "{}: unexpected kind {other} (Secrets in particular never belong in examples)",
                doc.at()
            ),
        }
    }
    // The brief of examples/: every managed kind and both config kinds are shown.
    let kinds: BTreeSet<&str> = docs.iter().map(Doc::kind).collect();
    for kind in [
        "Database",
        "Login",
        "User",
        "Schema",
        "ProviderConfig",
        "ClusterProviderConfig",
    ] {
        assert!(kinds.contains(kind), "no example of {kind}");
    }
    assert!(managed >= 4 && configs >= 2);
}

#[test]
fn every_credential_source_has_an_example() {
    let docs = examples();
    let sources: BTreeSet<&'static str> = docs
        .iter()
        .filter(|d| d.kind().ends_with("ProviderConfig"))
        .map(|d| convert_config(d).credentials.source())
        .collect();
    for source in [
        "Secret",
        "AzureWorkloadIdentity",
        "AzureManagedIdentity",
        "AwsSecretsManager",
        "InjectedIdentity",
    ] {
        assert!(sources.contains(source), "no example config with source {source}");
    }
}

#[test]
fn every_user_type_and_login_type_has_an_example() {
    let docs = examples();
    let types = |kind: &str| -> BTreeSet<String> {
        docs.iter()
            .filter(|d| d.kind() == kind)
            .map(|d| {
                d.value["spec"]["forProvider"]["type"]
                    .as_str()
                    .unwrap_or(if kind == "User" { "ForLogin" } else { "Sql" })
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        types("User"),
        ["Contained", "External", "ForLogin", "WithoutLogin"]
            .map(String::from)
            .into()
    );
    assert_eq!(types("Login"), ["External", "Sql"].map(String::from).into());
}

/// Applying all of `examples/` at once (as `cargo xtask demo` does) must work: references
/// and selectors find exactly one object, every config referenced exists, and no two
/// resources claim one object (Kubernetes name, or SQL name on one server).
#[test]
fn the_examples_work_together() {
    let docs = examples();
    let mut k8s_names = BTreeSet::new();
    for doc in &docs {
        assert!(
            k8s_names.insert((doc.kind(), doc.namespace(), doc.name())),
            "{}: {} {}/{} is defined twice in examples/",
            doc.file,
            doc.kind(),
            doc.namespace(),
            doc.name()
        );
    }
    let configs: HashSet<(ConfigKind, &str, &str)> = docs
        .iter()
        .filter_map(|d| match d.kind() {
            "ProviderConfig" => Some((ConfigKind::ProviderConfig, d.namespace(), d.name())),
            "ClusterProviderConfig" => Some((ConfigKind::ClusterProviderConfig, "", d.name())),
            _ => None,
        })
        .collect();
    let mut server_objects = HashSet::new();
    for doc in docs.iter().filter(|d| d.is_managed()) {
        let c = convert_managed(doc);
        let (kind, name) = &c.config;
        let config_ns = match kind {
            ConfigKind::ProviderConfig => doc.namespace(),
            ConfigKind::ClusterProviderConfig => "",
        };
        assert!(
            configs.contains(&(*kind, config_ns, name.as_str())),
            "{}: its config {kind:?} {name} is not among the examples",
            doc.at()
        );
        // Databases and logins are server-level: one SQL name per server.
        if matches!(doc.kind(), "Database" | "Login") {
            assert!(
                server_objects.insert((c.config.clone(), doc.kind(), c.external_name.clone())),
                "{}: another example already manages {} [{}] on that server",
                doc.at(),
                doc.kind(),
                c.external_name
            );
        }
        for (target_kind, target) in &c.targets {
            let candidates = docs.iter().filter(|d| d.kind() == *target_kind);
            match target {
                Target::Name(_) => {}
                Target::Ref(r) => {
                    let ns = r.namespace.as_deref().unwrap_or(doc.namespace());
                    assert!(
                        candidates
                            .clone()
                            .any(|d| d.name() == r.name && d.namespace() == ns),
                        "{}: its reference to {target_kind} {ns}/{} resolves to nothing in examples/",
                        doc.at(),
                        r.name
                    );
                }
                Target::Selector(s) => {
                    let ns = s.namespace.as_deref().unwrap_or(doc.namespace());
                    let matching = candidates
                        .filter(|d| d.namespace() == ns)
                        .filter(|d| {
                            let labels = d.labels();
                            s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
                        })
                        .count();
                    assert_eq!(
                        matching,
                        1,
                        "{}: its {target_kind} selector must match exactly one example",
                        doc.at()
                    );
                }
            }
        }
    }
}

/// uptest reads these annotations: the example id names the file's root kind
/// (`sqlserver/v1alpha1/<kind>`, lower case), the timeout is whole seconds, and the update
/// parameter is a JSON object merged into the root's `spec.forProvider`, which must still be
/// valid afterwards; every root uptest runs lists the conditions to wait for (Ready, Synced).
#[test]
fn uptest_annotations_are_usable() {
    let docs = examples();
    let mut by_file: BTreeMap<&str, Vec<&Doc>> = BTreeMap::new();
    for doc in docs.iter().filter(|d| d.is_managed()) {
        by_file.entry(&doc.file).or_default().push(doc);
    }
    for (file, docs) in by_file {
        let ids: BTreeSet<&str> = docs
            .iter()
            .map(|d| {
                d.annotation("meta.upbound.io/example-id")
                    .unwrap_or_else(|| panic!("{}: no meta.upbound.io/example-id", d.at()))
            })
            .collect();
        assert_eq!(ids.len(), 1, "{file}: one example id per file, found {ids:?}");
        let id = ids.into_iter().next().unwrap();
        let root_kind = id
            .strip_prefix("sqlserver/v1alpha1/")
            .unwrap_or_else(|| panic!("{file}: example id {id} is not sqlserver/v1alpha1/<kind>"));
        let roots: Vec<&&Doc> = docs
            .iter()
            .filter(|d| d.kind().to_lowercase() == root_kind)
            .collect();
        assert!(
            !roots.is_empty(),
            "{file}: no {root_kind} although the example id names it"
        );
        for doc in docs {
            if let Some(timeout) = doc.annotation("uptest.upbound.io/timeout") {
                assert!(
                    timeout.parse::<u32>().is_ok_and(|t| t > 0),
                    "{}: uptest.upbound.io/timeout must be whole seconds",
                    doc.at()
                );
            }
            // uptest asserts every listed condition True; a root it runs must list both of
            // ours, and only conditions our kinds have.
            let runs = doc.annotation("upjet.upbound.io/manual-intervention").is_none();
            if runs && doc.kind().to_lowercase() == root_kind {
                let conditions = doc
                    .annotation("uptest.upbound.io/conditions")
                    .unwrap_or_else(|| panic!("{}: no uptest.upbound.io/conditions", doc.at()));
                let listed: BTreeSet<&str> = conditions.split(',').map(str::trim).collect();
                assert_eq!(
                    listed,
                    BTreeSet::from(["Ready", "Synced"]),
                    "{}: uptest.upbound.io/conditions",
                    doc.at()
                );
            }
            if let Some(update) = doc.annotation("uptest.upbound.io/update-parameter") {
                let patch: Value = serde_json::from_str(update)
                    .unwrap_or_else(|e| panic!("{}: update-parameter is not JSON: {e}", doc.at()));
                let patch = patch.as_object().expect("update-parameter is a JSON object");
                let mut updated = doc.value.clone();
                for (k, v) in patch {
                    assert_ne!(
                        doc.value["spec"]["forProvider"][k],
                        *v,
                        "{}: update-parameter {k} does not change anything",
                        doc.at()
                    );
                    updated["spec"]["forProvider"][k] = v.clone();
                }
                convert_managed(&Doc {
                    file: format!("{} after uptest's update", doc.file),
                    value: updated,
                });
            }
        }
    }
}

/// `deploy/install/crds/` and the Helm chart's `crds/` carry copies of every CRD (kustomize
/// refuses files outside its directory, Helm files outside its chart), so they must stay
/// byte-identical to `package/crds/` and `apis/crds/`, and the kustomization must list each.
#[test]
fn deploy_copies_of_the_crds_are_current() {
    let root = repo_root();
    let mut sources = BTreeMap::new();
    for dir in ["package/crds", "apis/crds"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            sources.insert(name, std::fs::read(&path).unwrap());
        }
    }
    let fix = "cp package/crds/*.yaml apis/crds/*.yaml deploy/install/crds/ && \
               cp package/crds/*.yaml apis/crds/*.yaml deploy/helm/provider-sqlserver/crds/";
    for copies in ["deploy/install/crds", "deploy/helm/provider-sqlserver/crds"] {
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(root.join(copies)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            found.insert(name, std::fs::read(&path).unwrap());
        }
        assert_eq!(
            found.keys().collect::<Vec<_>>(),
            sources.keys().collect::<Vec<_>>(),
            "{copies} must hold exactly the CRDs of package/crds and apis/crds; fix: {fix}"
        );
        for (name, text) in &sources {
            assert!(
                found[name] == *text,
                "{copies}/{name} differs from its source; fix: {fix}"
            );
        }
    }
    let kustomization = std::fs::read_to_string(root.join("deploy/install/kustomization.yaml")).unwrap();
    for name in sources.keys() {
        assert!(
            kustomization.contains(&format!("- crds/{name}")),
            "deploy/install/kustomization.yaml does not list crds/{name}"
        );
    }
}

/// `docs/api.md` must keep up with the CRDs: every field (as a `path` in backquotes) and every
/// CEL message must appear in it. Whitespace is collapsed, so wrapped prose still matches.
#[test]
fn api_reference_names_every_field_and_cel_message() {
    fn walk(node: &Value, path: &str, fields: &mut Vec<String>, messages: &mut Vec<String>) {
        for rule in node["x-kubernetes-validations"].as_array().into_iter().flatten() {
            messages.push(rule["message"].as_str().unwrap_or_default().to_owned());
        }
        if let Some(props) = node["properties"].as_object() {
            for (name, child) in props {
                let child_path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                if !matches!(child_path.as_str(), "apiVersion" | "kind" | "metadata") {
                    fields.push(child_path.clone());
                }
                walk(child, &child_path, fields, messages);
            }
        }
        if node["items"].is_object() {
            walk(&node["items"], &format!("{path}[]"), fields, messages);
        }
    }
    let root = repo_root();
    let collapse = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let doc = collapse(&std::fs::read_to_string(root.join("docs/api.md")).unwrap());
    let mut crds = Vec::new();
    yaml_files(&root.join("package/crds"), &mut crds);
    yaml_files(&root.join("apis/crds"), &mut crds);
    for crd in crds {
        let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(&crd).unwrap()).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        let (mut fields, mut messages) = (Vec::new(), Vec::new());
        walk(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            "",
            &mut fields,
            &mut messages,
        );
        for field in fields {
            // Conditions are described once, in prose, for all kinds.
            if field.starts_with("status.conditions[]") {
                continue;
            }
            assert!(
                doc.contains(&format!("`{field}`")),
                "docs/api.md does not describe {kind} field `{field}`"
            );
        }
        for message in messages {
            assert!(
                doc.contains(&collapse(&message)),
                "docs/api.md does not quote the {kind} CEL message: {message}"
            );
        }
    }
}
