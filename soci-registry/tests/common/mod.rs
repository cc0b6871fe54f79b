//! Test support: a tiny fault-injecting HTTP/1.1 server on loopback, and a launcher for Debian's
//! `docker-registry` (distribution 2.8).
//!
//! The server is hand-written on tokio sockets rather than hyper/axum so a test can do what a correct
//! server never does: close the connection mid-body, trickle a body slowly, or drop a request unanswered.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    /// `(start, end_inclusive)` of a `Range: bytes=a-b` / `bytes=a-` header.
    pub fn range(&self) -> Option<(u64, Option<u64>)> {
        let v = self.header("range")?.strip_prefix("bytes=")?;
        let (a, b) = v.split_once('-')?;
        Some((
            a.parse().ok()?,
            if b.is_empty() { None } else { b.parse().ok() },
        ))
    }
}

/// A response to send.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Response {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Response {
        self.body = b.into();
        self
    }

    pub fn json(self, v: &serde_json::Value) -> Response {
        self.header("Content-Type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }
}

/// What the server does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    Full(Response),
    /// Announce the full `Content-Length` but send only this many body bytes, then close.
    Truncate(Response, usize),
    /// Send the body `chunk` bytes at a time with `delay` between chunks.
    Slow(Response, usize, Duration),
    /// Close the connection without answering.
    Drop,
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Full(r)
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

pub struct Server {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        Server::start_on("127.0.0.1", handler).await
    }

    pub async fn start_on(
        ip: &str,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let log = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve_conn(sock, handler, log).await;
                });
            }
        });
        Server {
            addr,
            requests,
            task,
        }
    }

    /// `host:port`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path().starts_with(path_prefix))
            .count()
    }
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Request>> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).into_owned();
            let mut lines = head.split("\r\n");
            let first = lines.next().unwrap_or_default();
            let mut parts = first.split(' ');
            let method = parts.next().unwrap_or_default().to_owned();
            let target = parts.next().unwrap_or_default().to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let start = pos + 4;
            while buf.len() < start + len {
                let mut tmp = [0u8; 65536];
                let n = sock.read(&mut tmp).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            let body = buf[start..start + len].to_vec();
            buf.drain(..start + len);
            return Ok(Some(Request {
                method,
                target,
                headers,
                body,
            }));
        }
        let mut tmp = [0u8; 65536];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn head_bytes(r: &Response) -> Vec<u8> {
    let mut s = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    let mut has_len = false;
    for (k, v) in &r.headers {
        if k.eq_ignore_ascii_case("content-length") {
            has_len = true;
        }
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        s.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

async fn serve_conn(
    mut sock: TcpStream,
    handler: Handler,
    log: Arc<Mutex<Vec<Request>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await? {
        log.lock().unwrap().push(req.clone());
        let head_only = req.method == "HEAD";
        match handler(&req) {
            Reply::Full(r) => {
                sock.write_all(&head_bytes(&r)).await?;
                if !head_only {
                    sock.write_all(&r.body).await?;
                }
            }
            Reply::Truncate(r, n) => {
                sock.write_all(&head_bytes(&r)).await?;
                sock.write_all(&r.body[..n.min(r.body.len())]).await?;
                sock.flush().await?;
                return Ok(());
            }
            Reply::Slow(r, chunk, delay) => {
                sock.write_all(&head_bytes(&r)).await?;
                for c in r.body.chunks(chunk.max(1)) {
                    sock.write_all(c).await?;
                    sock.flush().await?;
                    tokio::time::sleep(delay).await;
                }
            }
            Reply::Drop => return Ok(()),
        }
    }
    Ok(())
}

/// Deterministic, poorly compressible test data.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Serves `blob` honouring single `Range` requests (206 + Content-Range, 416 past the end).
pub fn serve_range(req: &Request, blob: &[u8]) -> Response {
    let total = blob.len() as u64;
    match req.range() {
        None => Response::new(200).body(blob.to_vec()),
        Some((a, _)) if a >= total => {
            Response::new(416).header("Content-Range", &format!("bytes */{total}"))
        }
        Some((a, b)) => {
            let b = b.unwrap_or(total - 1).min(total - 1);
            Response::new(206)
                .header("Content-Range", &format!("bytes {a}-{b}/{total}"))
                .body(blob[a as usize..=b as usize].to_vec())
        }
    }
}

// -------------------------------------------------------------------------------------------------
// Real registries: Debian's docker-registry (distribution 2.8) and the project's referrers registry

pub struct Distribution {
    pub host: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A free loopback port: bind :0, read it, release it (small race window, fine for tests).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Waits until `GET /v2/` answers 200 on `port` (10 s).
async fn wait_ready(reg: Distribution, port: u16) -> Result<Distribution, String> {
    for _ in 0..100 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s
                .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            if out.starts_with(b"HTTP/1.1 200") || out.starts_with(b"HTTP/1.0 200") {
                return Ok(reg);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("registry did not become ready within 10 s".to_owned())
}

fn spawn_logged(
    cmd: &mut std::process::Command,
    dir: &std::path::Path,
) -> Result<std::process::Child, String> {
    let log = std::fs::File::create(dir.join("log")).map_err(|e| e.to_string())?;
    cmd.stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))
}

/// Starts `docker-registry serve` on a free loopback port with a throwaway config and storage.
/// `Err(reason)` if it cannot run here (binary missing, failed to start).
pub async fn start_distribution() -> Result<Distribution, String> {
    let bin = find_binary("docker-registry")
        .ok_or("docker-registry not installed (apt-get install docker-registry)")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port()?;
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
            dir.path().join("data").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = spawn_logged(
        std::process::Command::new(bin).arg("serve").arg(&cfg),
        dir.path(),
    )?;
    let reg = Distribution {
        host: format!("127.0.0.1:{port}"),
        child,
        _dir: dir,
    };
    wait_ready(reg, port).await
}

/// Starts the project's stdlib test registry with the native Referrers API
/// (`scripts/referrers-registry.py`), one referrer per page so `Link` pagination is exercised.
pub async fn start_referrers_registry() -> Result<Distribution, String> {
    let python = find_binary("python3").ok_or("python3 not installed")?;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/referrers-registry.py");
    if !script.is_file() {
        return Err(format!("{} not found", script.display()));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port()?;
    let child = spawn_logged(
        std::process::Command::new(python)
            .arg(&script)
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--referrers-page-size")
            .arg("1")
            .arg("--quiet")
            .arg(dir.path().join("data")),
        dir.path(),
    )?;
    let reg = Distribution {
        host: format!("127.0.0.1:{port}"),
        child,
        _dir: dir,
    };
    wait_ready(reg, port).await
}
