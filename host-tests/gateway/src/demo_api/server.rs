//! The demo API's HTTP server: tiny_http on 127.0.0.1 with a few worker
//! threads, every request recorded before it is answered (scripted reply, or
//! the route's), stopped on drop.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use tiny_http::{Request, Server};

use super::jwks::JwksControl;
use super::reply::Reply;
use super::request::ReceivedRequest;
use super::routes::route;
use super::scripted::{write_scripted, ScriptedReply};
use crate::credentials::unix_now;
use crate::introspection::{Introspected, IntrospectionSpec, INTROSPECTION_PATH};

const WORKERS: usize = 8;
const MAX_REQUEST_BODY: u64 = 16 * 1024 * 1024;

struct Shared {
    received: Mutex<Vec<ReceivedRequest>>,
    jwks: JwksControl,
    /// The demo authorization server's introspection, once a test serves it.
    introspection: Mutex<Option<IntrospectionSpec>>,
    script: Mutex<Option<ScriptedReply>>,
    stop: AtomicBool,
}

impl Shared {
    fn received(&self) -> MutexGuard<'_, Vec<ReceivedRequest>> {
        self.received.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running demo API on 127.0.0.1; stops on drop.
pub struct DemoApi {
    pub port: u16,
    shared: Arc<Shared>,
    server: Arc<Server>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for DemoApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoApi").field("port", &self.port).finish()
    }
}

impl DemoApi {
    /// On a free port, with an empty key set.
    pub fn start() -> Result<Self> {
        Self::start_with_jwks(json!({ "keys": [] }))
    }

    /// On a free port, serving `jwks` at `/.well-known/jwks.json`.
    pub fn start_with_jwks(jwks: Value) -> Result<Self> {
        Self::start_on(0, jwks)
    }

    /// On a given port (0 = free), for the foreground demo.
    pub fn start_on(port: u16, jwks: Value) -> Result<Self> {
        let server = Arc::new(
            Server::from_listener(no_delay_listener(port)?, None)
                .map_err(|e| anyhow!("demo API: {e}"))?,
        );
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .ok_or_else(|| anyhow!("demo API: not an IP listener"))?;
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            jwks: JwksControl::new(jwks),
            introspection: Mutex::new(None),
            script: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let workers = (0..WORKERS)
            .map(|_| {
                let (server, shared) = (Arc::clone(&server), Arc::clone(&shared));
                thread::spawn(move || serve(&server, &shared))
            })
            .collect();
        Ok(DemoApi {
            port,
            shared,
            server,
            workers,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer every request (but the JWKS) with `reply`; `None` restores
    /// the demo data.
    pub fn script(&self, reply: Option<ScriptedReply>) {
        *self.shared.script.lock().unwrap_or_else(|p| p.into_inner()) = reply;
    }

    /// Change the JWKS or its behaviour at run time.
    pub fn jwks(&self) -> JwksControl {
        self.shared.jwks.clone()
    }

    /// Answer RFC 7662 introspection at `/oauth2/introspect` from `spec`
    /// (the demo credentials' opaque tokens).
    pub fn serve_introspection(&self, spec: IntrospectionSpec) {
        *self
            .shared
            .introspection
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(spec);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.received().clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.shared.received().len()
    }

    /// Number of requests whose path starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.shared
            .received()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    }

    /// The most recent request whose path starts with `prefix`.
    pub fn last(&self, prefix: &str) -> Option<ReceivedRequest> {
        self.shared
            .received()
            .iter()
            .rev()
            .find(|r| r.path.starts_with(prefix))
            .cloned()
    }
}

impl Drop for DemoApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn serve(server: &Server, shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(request)) => handle(request, shared),
            Ok(None) => {}
            Err(_) => return,
        }
    }
}

/// A hanging introspection answer is given up after this long (or when
/// the server stops), so the server's threads are not held for ever.
const HANG_AT_MOST: Duration = Duration::from_secs(30);

fn handle(mut request: Request, shared: &Shared) {
    let received = record(&mut request);
    shared.received().push(received.clone());
    if received.path == INTROSPECTION_PATH {
        let spec = shared
            .introspection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(spec) = spec {
            introspect(request, &received, &spec, shared);
            return;
        }
    }
    if received.path != "/.well-known/jwks.json" {
        let script = shared
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(script) = script {
            let _ = write_scripted(request, &script);
            return;
        }
    }
    let _ = route(&received, &shared.jwks).send(request);
}

fn introspect(
    request: Request,
    received: &ReceivedRequest,
    spec: &IntrospectionSpec,
    shared: &Shared,
) {
    let answer = spec.introspect(received.header("authorization"), &received.body, unix_now());
    match answer {
        Introspected::Answer { status, body } => {
            let content_type = if body.starts_with(b"<") {
                "text/html"
            } else {
                "application/json"
            };
            let reply = Reply::Body {
                status,
                content_type,
                headers: Vec::new(),
                body,
            };
            let _ = reply.send(request);
        }
        Introspected::Hang => {
            let started = std::time::Instant::now();
            while !shared.stop.load(Ordering::SeqCst) && started.elapsed() < HANG_AT_MOST {
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn record(request: &mut Request) -> ReceivedRequest {
    let (path, query) = match request.url().split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (request.url().to_owned(), String::new()),
    };
    let headers = request
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let _ = request
        .as_reader()
        .take(MAX_REQUEST_BODY)
        .read_to_end(&mut body);
    ReceivedRequest {
        method: request.method().as_str().to_owned(),
        path,
        query,
        headers,
        body,
    }
}

/// A loopback listener whose connections send at once (`TCP_NODELAY`,
/// which Linux hands on to accepted sockets). tiny_http writes a reply's
/// head and body separately; with Nagle's algorithm the body then waits for
/// the ACK that Envoy's pooled upstream connection delays by ~40 ms, and
/// every request through the demo would measure that instead of citygate.
pub(super) fn no_delay_listener(port: u16) -> Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    socket
        .bind(&address.into())
        .map_err(|e| anyhow!("demo API: cannot listen on {address}: {e}"))?;
    socket.listen(128)?;
    Ok(socket.into())
}
