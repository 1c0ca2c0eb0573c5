//! The worker binary end to end, without a real apiserver (the local control plane is
//! being built elsewhere): a loopback stand-in serves the Lease, the WorkItem list/watch, a
//! password Secret and the status subresource; the emulator serves TDS. While another
//! replica renews the Lease the worker stands by and touches no SQL; once that replica stops
//! renewing it takes the Lease, creates the login from its WorkItem, writes the status with
//! server-side apply, and exits with code 3 when another identity takes the Lease again.

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

#[derive(Default)]
struct World {
    lease: Option<Value>,
    statuses: Vec<Value>,
    rv: u64,
}

type Shared = Arc<Mutex<World>>;

/// Deep merge as strategic-merge and apply patches do for the Lease's scalar fields.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn work_item() -> Value {
    json!({
        "apiVersion": "queue.sqlserver.kubesql.io/v1alpha1", "kind": "WorkItem",
        "metadata": {"name": "login-e2e", "namespace": "w", "generation": 1, "resourceVersion": "5",
                     "uid": "wi-1", "labels": {"queue.sqlserver.kubesql.io/worker": "w1"}},
        "spec": {
            "worker": "w1", "kind": "Login", "externalName": "e2e_login", "operation": "Apply",
            "resourceRef": {"apiVersion": "sqlserver.kubesql.io/v1alpha1", "kind": "Login", "namespace": "team", "name": "e2e", "uid": "u", "generation": 1},
            "desired": {"kind": "Login", "spec": {
                "kind": {"type": "Sql", "password": {"namespace": "team", "name": "e2e-password", "key": "password"},
                         "checkPolicy": true, "checkExpiration": false},
                "disabled": false, "serverRoles": ["dbcreator"], "terminateSessionsOnDelete": false}}
        }
    })
}

fn json_response(code: StatusCode, v: Value) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

async fn apiserver(State(world): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut w = world.lock().unwrap();
    w.rv += 1;
    let rv = w.rv.to_string();
    let not_found = || {
        json_response(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        )
    };
    if path.starts_with("/apis/coordination.k8s.io/v1/namespaces/w/leases") {
        return match method {
            Method::GET => match &w.lease {
                Some(l) => json_response(StatusCode::OK, l.clone()),
                None => not_found(),
            },
            Method::POST => {
                let mut l = body;
                l["metadata"]["namespace"] = json!("w");
                l["metadata"]["resourceVersion"] = json!(rv);
                l["apiVersion"] = json!("coordination.k8s.io/v1");
                l["kind"] = json!("Lease");
                w.lease = Some(l.clone());
                json_response(StatusCode::CREATED, l)
            }
            Method::PATCH => match w.lease.as_mut() {
                Some(l) => {
                    // A patch touches only what it names: the Lease manager patches `spec`,
                    // the SQL status reporter `metadata.annotations`.
                    for field in ["spec", "metadata"] {
                        if let Some(part) = body.get(field) {
                            merge(l.as_object_mut().unwrap().entry(field).or_insert(json!({})), part);
                        }
                    }
                    l["metadata"]["resourceVersion"] = json!(rv);
                    json_response(StatusCode::OK, l.clone())
                }
                None => not_found(),
            },
            _ => not_found(),
        };
    }
    if path == "/apis/queue.sqlserver.kubesql.io/v1alpha1/namespaces/w/workitems" {
        if query.contains("watch=") {
            // An open watch that never sends: the list is all there is.
            drop(w);
            return Response::new(Body::from_stream(futures::stream::pending::<
                Result<Bytes, std::io::Error>,
            >()));
        }
        let mut item = work_item();
        if let Some(s) = w.statuses.last() {
            item["status"] = s["status"].clone();
        }
        return json_response(
            StatusCode::OK,
            json!({"apiVersion": "queue.sqlserver.kubesql.io/v1alpha1", "kind": "WorkItemList",
                   "metadata": {"resourceVersion": rv}, "items": [item]}),
        );
    }
    if path == "/apis/queue.sqlserver.kubesql.io/v1alpha1/namespaces/w/workitems/login-e2e/status"
        && method == Method::PATCH
    {
        assert!(query.contains("fieldManager=sqlserver-worker"), "{query}");
        w.statuses.push(body.clone());
        let mut item = work_item();
        item["status"] = body["status"].clone();
        return json_response(StatusCode::OK, item);
    }
    if path == "/api/v1/namespaces/team/secrets/e2e-password" {
        return json_response(
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "e2e-password", "namespace": "team", "uid": "s1", "resourceVersion": "9"},
                   "data": {"password": "RTJlIVBhc3N3MHJk"}}),
        );
    }
    not_found()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_binary_reconciles_a_work_item_and_exits_when_the_lease_is_taken() {
    let emu = mssql_emulator::Emulator::start(mssql_emulator::Config::default())
        .await
        .expect("emulator");
    let world: Shared = Arc::default();
    let app = Router::new().fallback(apiserver).with_state(world.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_addr = listener.local_addr().expect("addr");
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.changed().await;
            })
            .await
    });
    let dir = std::env::temp_dir().join(format!("worker-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{api_addr}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: w\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: test\n"
        ),
    )
    .expect("kubeconfig");

    // Another replica holds the Lease and keeps renewing it (every second, 10 s duration).
    let renew = |w: &mut World| {
        w.lease = Some(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "w1", "namespace": "w", "resourceVersion": "1"},
            "spec": {"holderIdentity": "w1-other", "leaseDurationSeconds": 10,
                     "acquireTime": k8s_openapi::jiff::Timestamp::now().to_string(),
                     "renewTime": k8s_openapi::jiff::Timestamp::now().to_string()}
        }));
    };
    renew(&mut world.lock().unwrap());
    let renewing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let renewer = {
        let (world, renewing) = (world.clone(), renewing.clone());
        tokio::spawn(async move {
            while renewing.load(std::sync::atomic::Ordering::SeqCst) {
                renew(&mut world.lock().unwrap());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let health_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .env("WORKER_NAME", "w1")
        .env("POD_NAMESPACE", "w")
        .env("POD_NAME", "w1-0")
        .env("POD_IP", "127.0.0.1")
        .env("HEALTH_PORT", health_port.to_string())
        .env("SQL_HOST", emu.addr().ip().to_string())
        .env("SQL_PORT", emu.addr().port().to_string())
        .env("TLS_MODE", "Optional")
        .env("TLS_TRUST_SERVER_CERTIFICATE", "true")
        .env("SQL_USER", "sa")
        .env("SQL_PASSWORD", mssql_emulator::DEFAULT_SA_PASSWORD)
        .env("POLL_INTERVAL", "2s")
        .env("LOG_FORMAT", "plain")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker");

    // Standby: ready once the WorkItems are listed, and no SQL connection at all.
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", health_port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut answer = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer)).await;
            if answer.starts_with("HTTP/1.1 200") {
                ready = true;
                break;
            }
        }
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the worker exited early"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the standby became ready");
    assert_eq!(emu.counters().connections_opened, 0, "a standby touches no SQL");
    assert!(world.lock().unwrap().statuses.is_empty(), "nor any status");

    // The other replica stops renewing: the worker takes over when its Lease expires.
    renewing.store(false, std::sync::atomic::Ordering::SeqCst);
    let _ = renewer.await;

    // Bounded wait for the first status that reports the login.
    let mut written = None;
    for _ in 0..300 {
        if let Some(s) = world
            .lock()
            .unwrap()
            .statuses
            .iter()
            .find(|s| s["status"]["exists"] == json!(true))
        {
            written = Some(s.clone());
        }
        if written.is_some() || child.try_wait().expect("try_wait").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status =
        written.unwrap_or_else(|| panic!("no status written; lease: {:?}", world.lock().unwrap().lease));
    let s = &status["status"];
    assert_eq!(s["observedGeneration"], 1);
    assert_eq!(s["upToDate"], true, "{s}");
    assert_eq!(s["holder"], "w1-0");
    assert_eq!(s["atProvider"]["serverRoles"], json!(["dbcreator"]));
    let lease = world.lock().unwrap().lease.clone().expect("lease created");
    assert_eq!(lease["spec"]["holderIdentity"], "w1-0", "{lease}");
    let catalog = emu.catalog_json().to_string();
    assert!(catalog.contains("\"e2e_login\""), "the login exists");

    // Another replica takes the Lease: the worker notices at its next renewal and exits 3.
    {
        let mut w = world.lock().unwrap();
        let l = w.lease.as_mut().unwrap();
        l["spec"]["holderIdentity"] = json!("w1-other");
        l["spec"]["renewTime"] = json!(k8s_openapi::jiff::Timestamp::now().to_string());
        l["spec"]["leaseDurationSeconds"] = json!(3600);
    }
    let mut code = None;
    for _ in 0..600 {
        if let Some(status) = child.try_wait().expect("try_wait") {
            code = status.code();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if code.is_none() {
        let _ = child.kill().await;
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(Duration::from_secs(5), e.read_to_string(&mut stderr)).await;
    }
    assert_eq!(code, Some(3), "exit on losing the Lease; stderr:\n{stderr}");
    assert!(!stderr.contains(mssql_emulator::DEFAULT_SA_PASSWORD));
    assert!(!stderr.contains("E2e!Passw0rd"));

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    let _ = std::fs::remove_dir_all(&dir);
    emu.shutdown().await;
}
