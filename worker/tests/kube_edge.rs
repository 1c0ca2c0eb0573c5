//! The thin Kubernetes calls against a recording stand-in for the apiserver on loopback:
//! the status write is a server-side apply of the status subresource under the worker's
//! field manager, with force; Secrets are read by name, and a missing one is `None`.

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::IntoResponse,
};
use serde_json::json;
use std::sync::{Arc, Mutex};
use worker::{
    k8s::{KubeSecrets, StatusInput, status_document, write_status},
    reconcile::{Outcome, SecretSource},
};

/// (method, URI, content type, body) of one request.
type Call = (String, String, String, String);

#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<Call>>>);

async fn handler(
    State(rec): State<Recorded>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    rec.0.lock().unwrap().push((
        method.to_string(),
        uri.to_string(),
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    ));
    let path = uri.path();
    if path.ends_with("/secrets/app-password") {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "app-password", "namespace": "team", "uid": "u-1", "resourceVersion": "42"},
            "data": {"password": "U2VjcmV0IVBhc3N3MHJk"}});
        return (StatusCode::OK, secret.to_string());
    }
    if path.contains("/secrets/") {
        let status = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
        return (StatusCode::NOT_FOUND, status.to_string());
    }
    if path.ends_with("/status") {
        let mut wi: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        wi["metadata"] = json!({"name": "login-app", "namespace": "w"});
        wi["spec"] = json!({"worker": "w1", "kind": "Login", "externalName": "app", "operation": "Apply", "desired": {},
            "resourceRef": {"apiVersion": "v", "kind": "Login", "namespace": "team", "name": "app", "uid": "u"}});
        return (StatusCode::OK, wi.to_string());
    }
    (StatusCode::NOT_FOUND, "{}".to_owned())
}

#[tokio::test]
async fn status_is_applied_and_secrets_are_read_by_name() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rec = Recorded::default();
    let app = Router::new().fallback(handler).with_state(rec.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.changed().await;
            })
            .await
    });
    let config = kube::Config::new(format!("http://{addr}").parse().expect("uri"));
    let client = kube::Client::try_from(config).expect("client");

    let api: kube::Api<apis::generated::workitems::WorkItem> = kube::Api::namespaced(client.clone(), "w");
    let doc = status_document(&StatusInput {
        generation: 2,
        resource_generation: Some(5),
        outcome: &Outcome {
            exists: true,
            up_to_date: true,
            ..Outcome::default()
        },
        attempts: 0,
        holder: "w1-0",
        now: "2026-11-25T18:00:00Z".into(),
    });
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        write_status(&api, "login-app", &doc),
    )
    .await
    .expect("in time")
    .expect("status written");

    let secrets = KubeSecrets { client };
    let found = |name: &str| apis::request::SecretKeyRef {
        namespace: "team".into(),
        name: name.into(),
        key: "password".into(),
    };
    let value = secrets
        .get(&found("app-password"))
        .await
        .expect("read")
        .expect("present");
    assert_eq!(value.password.expose(), "Secret!Passw0rd");
    assert_eq!(value.version, "u-1/42");
    assert!(
        secrets.get(&found("absent")).await.expect("read").is_none(),
        "404 is None"
    );

    let _ = stop.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    let calls = rec.0.lock().unwrap().clone();
    let (method, uri, content_type, body) = &calls[0];
    assert_eq!(method, "PATCH");
    assert!(
        uri.starts_with("/apis/queue.sqlserver.kubesql.io/v1alpha1/namespaces/w/workitems/login-app/status?"),
        "{uri}"
    );
    assert!(
        uri.contains("fieldManager=sqlserver-worker") && uri.contains("force=true"),
        "{uri}"
    );
    assert_eq!(content_type, "application/apply-patch+yaml");
    let sent: serde_json::Value = serde_json::from_str(body).expect("json body");
    assert_eq!(sent["status"]["observedGeneration"], 2);
    assert_eq!(sent["kind"], "WorkItem");
    assert_eq!(calls[1].1, "/api/v1/namespaces/team/secrets/app-password");
    assert!(
        !format!("{calls:?}").contains("Secret!Passw0rd"),
        "the value never goes back out"
    );
}
