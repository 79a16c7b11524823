//! The `/metrics` endpoint: a small HTTP/1.1 server answering `GET` on its own thread.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The `/metrics` endpoint.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Longest request head we read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request or read the reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

impl MetricsServer {
    /// Listens on `addr` and serves scrapes of `engine` (and of the control socket's counters).
    #[cfg(feature = "dataplane")]
    pub fn start(
        addr: SocketAddr,
        engine: Arc<crate::runtime::Engine>,
        control: Option<Arc<crate::ctl::CtlCounters>>,
    ) -> std::io::Result<MetricsServer> {
        use super::engine::{Scrape, render};
        let start_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        MetricsServer::serve_pages(addr, move |path| {
            (path == "/metrics").then(|| {
                let snapshot = engine.snapshot();
                render(&Scrape {
                    snapshot: &snapshot,
                    backend: engine.backend().name(),
                    fallback: engine.fallback_reason().is_some(),
                    start_time,
                    control: control.as_deref(),
                })
            })
        })
    }

    /// Listens on `addr` and answers each `GET` with what `page` returns for its path (404
    /// for `None`), one connection at a time on its own thread: any exposition, such as
    /// `srtp-control`'s registration metrics.
    pub fn serve_pages(
        addr: SocketAddr,
        page: impl Fn(&str) -> Option<String> + Send + 'static,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("srtp-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let _ = serve(conn, &page);
                }
            })?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Answers one HTTP/1.x request: `GET` (or `HEAD`) of a path `page` knows, 404, 405 or 400.
fn serve(mut conn: TcpStream, page: impl FnOnce(&str) -> Option<String>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    conn.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            return respond(&mut conn, "431 Request Header Fields Too Large", "", false);
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return respond(&mut conn, "400 Bad Request", "bad request line\n", false);
    };
    if !version.starts_with("HTTP/1.") {
        return respond(&mut conn, "400 Bad Request", "HTTP/1.x only\n", false);
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut conn, "405 Method Not Allowed", "GET /metrics\n", false);
    }
    let path = target.split('?').next().unwrap_or("");
    match page(path) {
        Some(body) => respond(&mut conn, "200 OK", &body, head_only),
        None => respond(&mut conn, "404 Not Found", "try /metrics\n", head_only),
    }
}

fn respond(conn: &mut TcpStream, status: &str, body: &str, head_only: bool) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    if !head_only {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}
