//! The part of the kubelet API that `kubectl logs` needs: the apiserver proxies
//! `GET /containerLogs/<namespace>/<pod>/<container>` to `https://<InternalIP>:<kubeletEndpoint>`.
//! Served over TLS on loopback from the log files the pod workers write; `tailLines`,
//! `previous` and `follow` are honoured. Requests are not authenticated: the port is on
//! loopback and the same logs are readable as files by anyone on the machine.

use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpListener,
};
use tokio_rustls::TlsAcceptor;

/// Marker the pod worker writes before each start of a container (see `pod::launch`).
pub const START_MARKER: &str = "==> ";

/// Serves container logs from `log_dir` on `127.0.0.1:port` until the task is aborted.
pub async fn serve(port: u16, cert: PathBuf, key: PathBuf, log_dir: PathBuf) -> Result<()> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&key).with_context(|| format!("reading {}", key.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let log_dir = Arc::new(log_dir);
    loop {
        let (tcp, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let log_dir = log_dir.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    if let Err(e) = handle(tls, &log_dir).await {
                        tracing::debug!(error = %e, "kubelet API request failed");
                    }
                }
                _ => tracing::debug!("TLS handshake failed or timed out"),
            }
        });
    }
}

fn query(q: &str, name: &str) -> Option<String> {
    q.split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
}

/// The current (or, with `previous`, the one before) run's part of a container's log.
fn select(text: &str, previous: bool, tail: Option<usize>) -> String {
    let mut runs: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.split_inclusive('\n') {
        if line.starts_with(START_MARKER) {
            runs.push(Vec::new());
        } else if let Some(run) = runs.last_mut() {
            run.push(line);
        }
    }
    let idx = if previous {
        runs.len().saturating_sub(2)
    } else {
        runs.len() - 1
    };
    let lines = &runs[idx];
    let from = tail.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
    lines[from..].concat()
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(stream: S, log_dir: &std::path::Path) -> Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    reader.read_line(&mut request).await?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let target = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let mut stream = reader.into_inner();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let file = match parts.as_slice() {
        ["containerLogs", ns, pod, container] => log_dir.join(format!("{ns}_{pod}_{container}.log")),
        _ => {
            stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    let Ok(text) = tokio::fs::read_to_string(&file).await else {
        let msg = format!("no logs for {}", parts[1..].join("/"));
        let resp = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        );
        stream.write_all(resp.as_bytes()).await?;
        return Ok(());
    };
    let previous = query(q, "previous").is_some_and(|v| v == "true");
    let tail = query(q, "tailLines").and_then(|v| v.parse().ok());
    let follow = query(q, "follow").is_some_and(|v| v == "true");
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
        .await?;
    stream.write_all(select(&text, previous, tail).as_bytes()).await?;
    stream.flush().await?;
    if follow && !previous {
        // Stream what the process appends until the client goes away.
        let mut offset = text.len();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok(now) = tokio::fs::read(&file).await else {
                break;
            };
            if now.len() > offset {
                stream.write_all(&now[offset..]).await?;
                stream.flush().await?;
                offset = now.len();
            }
        }
    }
    stream.shutdown().await.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::select;

    #[test]
    fn runs_and_tail() {
        let log = "==> start 0\na\nb\n==> start 1\nc\nd\ne\n";
        assert_eq!(select(log, false, None), "c\nd\ne\n");
        assert_eq!(select(log, false, Some(2)), "d\ne\n");
        assert_eq!(select(log, true, None), "a\nb\n");
    }
}
