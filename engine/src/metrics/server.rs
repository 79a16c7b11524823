//! The `/metrics` endpoint: hyper's HTTP/1 server on a current-thread tokio runtime of its own
//! thread. Every connection is a task of its own under a deadline for its whole request and
//! reply, so a slow or idle client holds only itself: a scrape is answered while hundreds of
//! connections dawdle, and stopping never waits for them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, oneshot};

/// The `/metrics` endpoint.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    refused: Arc<AtomicU64>,
}

/// Longest request head read (hyper's smallest buffer limit); a longer one is answered 431.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection may last in all: its request, and the reply read by the client.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once; the next ones are closed at accept and counted.
const MAX_CONNECTIONS: usize = 512;
/// Pause after a failed accept (out of file descriptors), so that the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

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

    /// Listens on `addr` and answers each `GET` (or `HEAD`) with what `page` returns for its
    /// path (404 for `None`, 405 for other methods, 400 or 431 for a bad request), one request
    /// per connection: any exposition, such as `srtp-control`'s registration metrics.
    pub fn serve_pages(
        addr: SocketAddr,
        page: impl Fn(&str) -> Option<String> + Send + 'static,
    ) -> std::io::Result<MetricsServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let refused = Arc::new(AtomicU64::new(0));
        let counted = refused.clone();
        let thread = std::thread::Builder::new()
            .name("srtp-metrics".into())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                let served = local.run_until(serve(listener, Rc::new(page), stopped, counted));
                if let Err(e) = runtime.block_on(served) {
                    tracing::error!("metrics endpoint stopped: {e}");
                }
                // Dropping the runtime here ends every connection still open.
            })?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
            refused,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections closed at accept because 512 were open.
    pub fn refused_connections(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Stops serving: the listener closes and every open connection ends at once.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
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

/// Accepts until told to stop; each connection is a local task with a slot of
/// [`MAX_CONNECTIONS`].
async fn serve<P>(
    listener: std::net::TcpListener,
    page: Rc<P>,
    mut stopped: oneshot::Receiver<()>,
    refused: Arc<AtomicU64>,
) -> std::io::Result<()>
where
    P: Fn(&str) -> Option<String> + 'static,
{
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if refused.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    "metrics endpoint: {MAX_CONNECTIONS} connections open; closing new ones \
                     until some end (each lasts at most {CONNECTION_DEADLINE:?})"
                );
            }
            continue;
        };
        let page = page.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |req| {
                let reply = answer(&req, &*page);
                async move { Ok::<_, Infallible>(reply) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(MAX_REQUEST)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
            drop(slot);
        });
    }
}

/// The reply to one request.
fn answer<B>(req: &Request<B>, page: &impl Fn(&str) -> Option<String>) -> Response<Full<Bytes>> {
    let (status, body) = match *req.method() {
        Method::GET | Method::HEAD => match page(req.uri().path()) {
            Some(body) => (StatusCode::OK, body),
            None => (StatusCode::NOT_FOUND, "try /metrics\n".to_owned()),
        },
        _ => (StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n".to_owned()),
    };
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    reply
}
