//! Tiny program for the testenv smoke suite (no dependencies, so it builds in seconds).
//!
//! `testprog [serve]` (what the pod runs) listens on `$POD_IP:${PORT:-8080}` and answers:
//! - `GET /healthz` → 200 `ok` (readiness / liveness probes);
//! - `GET /env/NAME` → the value of the environment variable, 404 if unset;
//! - `GET /file/PATH` → the file at `$TESTENV_MOUNT_ROOT/PATH`, i.e. what a real pod would read
//!   at the mount path `/PATH`.
//!
//! `testprog get URL` (what the suite's scripts run) prints the body of an HTTP GET and exits
//! non-zero unless the status is 200.
#![forbid(unsafe_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    time::Duration,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        None | Some("serve") => serve(),
        Some("get") if args.len() == 2 => get(&args[1]),
        _ => {
            eprintln!("usage: testprog [serve] | testprog get http://HOST:PORT/PATH");
            2
        }
    };
    std::process::exit(code);
}

fn serve() -> i32 {
    let host = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = match TcpListener::bind(format!("{host}:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("testprog: cannot listen on {host}:{port}: {e}");
            return 1;
        }
    };
    println!("testprog: listening on {host}:{port}");
    for stream in listener.incoming().flatten() {
        // One request at a time is plenty for probes and a test script.
        if let Err(e) = handle(stream) {
            eprintln!("testprog: request failed: {e}");
        }
    }
    0
}

fn handle(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Read the headers too: closing with unread input would reset the client's connection.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 0 && header.trim() != "" {
        header.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (code, body) = if path == "/healthz" {
        (200, "ok".to_string())
    } else if let Some(name) = path.strip_prefix("/env/") {
        match std::env::var(name) {
            Ok(v) => (200, v),
            Err(_) => (404, format!("{name} is not set")),
        }
    } else if let Some(file) = path.strip_prefix("/file/") {
        let root = std::env::var("TESTENV_MOUNT_ROOT").unwrap_or_default();
        match std::fs::read_to_string(format!("{root}/{file}")) {
            Ok(v) => (200, v),
            Err(e) => (404, format!("{file}: {e}")),
        }
    } else {
        (404, "not found".to_string())
    };
    let reason = if code == 200 { "OK" } else { "Not Found" };
    let resp = format!(
        "HTTP/1.0 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes())
}

fn get(url: &str) -> i32 {
    let Some(rest) = url.strip_prefix("http://") else {
        eprintln!("testprog get: only http:// URLs");
        return 2;
    };
    let (hostport, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let result = (|| -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(hostport)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        // One write: the request must arrive whole before the server answers and closes.
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let code = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((code, body))
    })();
    match result {
        Ok((200, body)) => {
            print!("{body}");
            0
        }
        Ok((code, body)) => {
            eprintln!("testprog get {url}: HTTP {code}: {body}");
            1
        }
        Err(e) => {
            eprintln!("testprog get {url}: {e}");
            1
        }
    }
}
