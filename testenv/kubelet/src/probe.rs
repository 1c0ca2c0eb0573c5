//! Probes run from the kubelet against the pod's loopback address: httpGet, tcpSocket, exec.
//! (grpc probes fall back to a TCP connect; HTTPS httpGet too, since a TLS handshake that
//! skips verification would add a TLS client for little gain.)

use k8s_openapi::{
    api::core::v1::{Container, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use std::{path::Path, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn port(c: &Container, p: &IntOrString) -> Option<u16> {
    match p {
        IntOrString::Int(i) => u16::try_from(*i).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

/// Runs one probe attempt; true on success. Bounded by the probe's `timeoutSeconds`.
pub async fn run(p: &Probe, c: &Container, ip: &str, env: &[(String, String)], cwd: &Path) -> bool {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    tokio::time::timeout(timeout, attempt(p, c, ip, env, cwd))
        .await
        .unwrap_or(false)
}

async fn attempt(p: &Probe, c: &Container, ip: &str, env: &[(String, String)], cwd: &Path) -> bool {
    if let Some(h) = &p.http_get {
        let Some(port) = port(c, &h.port) else {
            return false;
        };
        let host = h.host.clone().unwrap_or_else(|| ip.to_string());
        let Ok(mut s) = TcpStream::connect((host.as_str(), port)).await else {
            return false;
        };
        if h.scheme.as_deref() == Some("HTTPS") {
            return true;
        }
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let mut req =
            format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/process\r\n");
        for hh in h.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", hh.name, hh.value));
        }
        req.push_str("\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let mut n = 0;
        // The status line is all we need: "HTTP/1.x NNN".
        while n < 12 {
            match s.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        let line = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        return (200..400).contains(&code);
    }
    if let Some(t) = &p.tcp_socket {
        let Some(port) = port(c, &t.port) else {
            return false;
        };
        let host = t.host.clone().unwrap_or_else(|| ip.to_string());
        return TcpStream::connect((host.as_str(), port)).await.is_ok();
    }
    if let Some(e) = &p.exec {
        let Some((prog, args)) = e.command.as_deref().and_then(|c| c.split_first()) else {
            return false;
        };
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        return cmd.status().await.is_ok_and(|s| s.success());
    }
    if let Some(g) = &p.grpc {
        let Ok(port) = u16::try_from(g.port) else {
            return false;
        };
        return TcpStream::connect((ip, port)).await.is_ok();
    }
    false
}
