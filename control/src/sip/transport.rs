//! SIP transports on tokio: UDP, TCP and TLS (RFC 3261 18), with stream framing by
//! Content-Length, RFC 5626 CRLF keepalive pongs, and the message log.
//!
//! One [`SipTransport`] listens on one address with one protocol. Received messages and
//! closed connections come out of the channel returned by [`SipTransport::bind`]; replies go
//! back on the [`Flow`] a message came in on (the connection, or the UDP source).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::incoming::{Admission, Incoming, Slot};
use super::log::{Direction, MessageLog};
use super::message::{Message, StreamRead};
use super::tls::{TlsConfigError, TlsFailure, TlsSettings, client_config, server_config};

/// A transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Protocol {
    /// The Via transport token.
    pub fn via(self) -> &'static str {
        match self {
            Protocol::Udp => "UDP",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
        }
    }

    /// Whether the transport is reliable (no retransmissions, RFC 3261 17).
    pub fn reliable(self) -> bool {
        self != Protocol::Udp
    }

    /// Parses `udp`, `tcp` or `tls`.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(Protocol::Udp),
            "tcp" => Some(Protocol::Tcp),
            "tls" => Some(Protocol::Tls),
            _ => None,
        }
    }
}

/// How to reach the peer a message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// A UDP peer.
    Udp(SocketAddr),
    /// A TCP or TLS connection.
    Stream {
        /// Connection id.
        id: u64,
        /// Peer address.
        peer: SocketAddr,
    },
}

impl Flow {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        match self {
            Flow::Udp(a) | Flow::Stream { peer: a, .. } => *a,
        }
    }
}

/// What the transport reports.
#[derive(Debug)]
pub enum TransportEvent {
    /// A message arrived.
    Message {
        /// The message.
        msg: Box<Message>,
        /// Where it came from.
        flow: Flow,
    },
    /// A connection closed; `error` says why when it was not a clean close.
    Closed {
        /// The connection.
        flow: Flow,
        /// What went wrong, if anything.
        error: Option<TransportError>,
    },
    /// An RFC 5626 pong (a bare CRLF) came on a connection: the answer to our ping.
    Pong {
        /// The connection.
        flow: Flow,
    },
    /// A STUN Binding success came over UDP: the answer to an RFC 5626 4.4.2 keepalive.
    StunAnswer {
        /// Where from.
        flow: Flow,
        /// Its transaction id.
        id: super::stun::TransactionId,
    },
    /// A datagram or stream bytes that are not SIP (counted, logged, dropped).
    Garbage {
        /// Where from.
        peer: SocketAddr,
        /// Why.
        error: super::message::ParseError,
    },
}

/// Why a transport operation failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TransportError {
    /// Socket error (text of the OS error).
    #[error("{protocol} {what} {addr}: {error}")]
    Io {
        /// Protocol.
        protocol: &'static str,
        /// What we tried.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// The OS error.
        error: String,
    },
    /// A TLS failure.
    #[error("{0}")]
    Tls(#[from] TlsFailure),
    /// The TLS settings could not be loaded.
    #[error("{0}")]
    TlsConfig(String),
    /// The connection is gone.
    #[error("connection to {0} is closed")]
    Closed(SocketAddr),
}

impl From<TlsConfigError> for TransportError {
    fn from(e: TlsConfigError) -> Self {
        TransportError::TlsConfig(e.to_string())
    }
}

type Writers = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>>>;

/// A client's TLS handshake must be done within this long of its connection.
const TLS_HANDSHAKE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// A connection a peer opened is closed after this long without a byte from it (Kamailio's
/// `tcp_connection_lifetime` default; RFC 5626 keepalives come every 30 to 120 s).
const IDLE_INCOMING: std::time::Duration = std::time::Duration::from_secs(120);

/// One listening SIP transport and its connections.
#[derive(Clone)]
pub struct SipTransport {
    protocol: Protocol,
    local: SocketAddr,
    /// The UDP socket for sending: the same socket as the receiver's, through a duplicate
    /// descriptor used directly (tokio's `try_send_to` refuses with WouldBlock until the
    /// reactor has seen the socket writable once, which silently dropped the first request
    /// of every agent until its retransmission at T1).
    udp: Option<Arc<std::net::UdpSocket>>,
    writers: Writers,
    events: mpsc::UnboundedSender<TransportEvent>,
    next_id: Arc<AtomicU64>,
    /// Connections peers opened to us, open now, and how they are admitted.
    incoming: Arc<Incoming>,
    tls_client: Option<(Arc<rustls::ClientConfig>, String, bool)>,
    log: MessageLog,
    silent: Arc<AtomicBool>,
}

impl std::fmt::Debug for SipTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SipTransport({} {})", self.protocol.via(), self.local)
    }
}

impl SipTransport {
    /// Binds and starts receiving. Must run inside a tokio runtime.
    pub async fn bind(
        protocol: Protocol,
        addr: SocketAddr,
        tls: &TlsSettings,
        log: MessageLog,
    ) -> Result<(SipTransport, mpsc::UnboundedReceiver<TransportEvent>), TransportError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let t = SipTransport::bind_into(protocol, addr, tls, log, tx).await?;
        Ok((t, rx))
    }

    /// [`SipTransport::bind`] with its events going into `tx` (several transports can share
    /// one channel: a fleet with a socket per endpoint).
    pub async fn bind_into(
        protocol: Protocol,
        addr: SocketAddr,
        tls: &TlsSettings,
        log: MessageLog,
        tx: mpsc::UnboundedSender<TransportEvent>,
    ) -> Result<SipTransport, TransportError> {
        let io_err = |what, e: std::io::Error| TransportError::Io {
            protocol: protocol.via(),
            what,
            addr,
            error: e.to_string(),
        };
        let tls_client = if protocol == Protocol::Tls {
            let (c, trust) = client_config(tls)?;
            if tls.verify == super::tls::Verify::Skip {
                tracing::warn!(
                    "TLS server certificate verification is OFF (verify = skip): UNSAFE, for lab use only"
                );
            }
            Some((c, trust, tls.identity.is_some()))
        } else {
            None
        };
        let mut t = SipTransport {
            protocol,
            local: addr,
            udp: None,
            writers: Arc::new(Mutex::new(HashMap::new())),
            events: tx,
            next_id: Arc::new(AtomicU64::new(1)),
            incoming: Arc::new(Incoming::new()),
            tls_client,
            log,
            silent: Arc::new(AtomicBool::new(false)),
        };
        match protocol {
            Protocol::Udp => {
                let std_sock = std::net::UdpSocket::bind(addr).map_err(|e| io_err("bind", e))?;
                std_sock
                    .set_nonblocking(true)
                    .map_err(|e| io_err("bind", e))?;
                let sender = std_sock.try_clone().map_err(|e| io_err("bind", e))?;
                let sock = Arc::new(UdpSocket::from_std(std_sock).map_err(|e| io_err("bind", e))?);
                t.local = sock.local_addr().map_err(|e| io_err("bind", e))?;
                t.udp = Some(Arc::new(sender));
                let t2 = t.clone();
                tokio::spawn(async move { t2.udp_loop(sock).await });
            }
            Protocol::Tcp | Protocol::Tls => {
                let acceptor = if protocol == Protocol::Tls && tls.identity.is_some() {
                    Some(tokio_rustls::TlsAcceptor::from(server_config(tls)?))
                } else {
                    None
                };
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|e| io_err("listen", e))?;
                t.local = l.local_addr().map_err(|e| io_err("listen", e))?;
                let t2 = t.clone();
                tokio::spawn(async move { t2.accept_loop(l, acceptor).await });
            }
        }
        Ok(t)
    }

    /// The channel this transport's events go into (for [`SipTransport::bind_into`]).
    pub fn events_sender(&self) -> mpsc::UnboundedSender<TransportEvent> {
        self.events.clone()
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    async fn udp_loop(self, sock: Arc<UdpSocket>) {
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, peer) = match sock.recv_from(&mut buf).await {
                Ok(x) => x,
                // ICMP errors surface here on Linux; they concern one peer only.
                Err(_) => continue,
            };
            let bytes = &buf[..n];
            // RFC 5626 keepalives over UDP are STUN; a bare CRLF is ignored.
            if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if let Some((kind, id)) = super::stun::parse(bytes) {
                if kind == super::stun::BINDING_SUCCESS
                    && self
                        .events
                        .send(TransportEvent::StunAnswer {
                            flow: Flow::Udp(peer),
                            id,
                        })
                        .is_err()
                {
                    return;
                }
                continue;
            }
            self.log
                .record(Direction::Received, "UDP", self.local, peer, bytes);
            let ev = match Message::parse(bytes) {
                Ok(m) => TransportEvent::Message {
                    msg: Box::new(m),
                    flow: Flow::Udp(peer),
                },
                Err(error) => TransportEvent::Garbage { peer, error },
            };
            if self.events.send(ev).is_err() {
                return;
            }
        }
    }

    async fn accept_loop(self, l: TcpListener, acceptor: Option<tokio_rustls::TlsAcceptor>) {
        let mut said_full = false;
        loop {
            self.incoming.room().await;
            let (tcp, peer) = match l.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors (or another passing error): the connection
                    // waits in the backlog; do not spin on it at full CPU.
                    if !said_full {
                        tracing::warn!("SIP {} listener cannot accept: {e}", self.protocol.via());
                        said_full = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            said_full = false;
            let slot = match self.incoming.admit() {
                Admission::Admitted(slot) => slot,
                Admission::Evicted(slot) => {
                    let (evicted, _) = self.incoming.counts();
                    if evicted == 1 || evicted % 1000 == 0 {
                        tracing::warn!(
                            "SIP {} listener: {} connections open, the limit; closed the oldest \
                             that never sent a message to admit {peer} ({evicted} so far)",
                            self.protocol.via(),
                            self.incoming.limit()
                        );
                    }
                    slot
                }
                Admission::Full => {
                    let (_, refused) = self.incoming.counts();
                    if refused == 1 || refused % 1000 == 0 {
                        tracing::warn!(
                            "SIP {} listener: {} connections open, the limit, all in use; \
                             refused {peer} ({refused} so far)",
                            self.protocol.via(),
                            self.incoming.limit()
                        );
                    }
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let t = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        let handshake = tokio::time::timeout(TLS_HANDSHAKE_DEADLINE, a.accept(tcp));
                        let done = tokio::select! {
                            done = handshake => done,
                            () = slot.closing() => return,
                        };
                        match done {
                            Ok(Ok(s)) => {
                                t.register(s, peer, Some(slot));
                            }
                            Ok(Err(e)) => {
                                let f = TlsFailure::from_io(&e, false, "");
                                tracing::warn!(%peer, "TLS handshake with a client failed: {f}");
                            }
                            Err(_) => {
                                tracing::warn!(
                                    %peer,
                                    "TLS client did not complete its handshake within {TLS_HANDSHAKE_DEADLINE:?}: closed"
                                );
                            }
                        }
                    }
                    None if t.protocol == Protocol::Tls => {
                        tracing::warn!(%peer, "TLS connection refused: no certificate configured for this listener");
                    }
                    None => {
                        t.register(tcp, peer, Some(slot));
                    }
                }
            });
        }
    }

    /// Registers a connection and starts its reader and writer tasks: one we opened, or one a
    /// peer opened (`slot`: its place among the incoming).
    fn register<S>(&self, stream: S, peer: SocketAddr, slot: Option<Slot>) -> Flow
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let flow = Flow::Stream { id, peer };
        let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
        self.writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, wtx);
        let (mut rd, mut wr) = tokio::io::split(stream);
        tokio::spawn(async move {
            while let Some(b) = wrx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let t = self.clone();
        let opened = std::time::Instant::now();
        let outgoing = slot.is_none();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(8192);
            let mut chunk = vec![0u8; 16384];
            let mut got_message = false;
            let error = loop {
                // A connection a peer opened and keeps silent (no message, no keepalive) is
                // closed after IDLE_INCOMING: thousands of them cost memory and descriptors.
                // One that never spoke may also be closed to make room for another.
                let read = async {
                    match &slot {
                        None => Ok(rd.read(&mut chunk).await),
                        Some(slot) => tokio::select! {
                            read = tokio::time::timeout(IDLE_INCOMING, rd.read(&mut chunk)) => read,
                            () = slot.closing() => {
                                tracing::debug!(%peer, "silent SIP connection closed to make room");
                                Ok(Ok(0))
                            }
                        },
                    }
                };
                let Ok(read) = read.await else {
                    tracing::debug!(%peer, "idle SIP connection closed");
                    break None;
                };
                match read {
                    // A TLS server that hangs up at once, before saying anything at all, usually
                    // did not like our client certificate (TLS 1.3 tells us after our
                    // Finished). Later, or from a client, a close is only a close.
                    Ok(0)
                        if !got_message
                            && t.protocol == Protocol::Tls
                            && outgoing
                            && opened.elapsed() < std::time::Duration::from_secs(2) =>
                    {
                        break Some(TransportError::Tls(TlsFailure::ClosedAfterHandshake));
                    }
                    Ok(0) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => {
                        break Some(match &t.tls_client {
                            Some((_, trust, sent)) => {
                                TransportError::Tls(TlsFailure::from_io(&e, *sent, trust))
                            }
                            None => TransportError::Io {
                                protocol: t.protocol.via(),
                                what: "read from",
                                addr: peer,
                                error: e.to_string(),
                            },
                        });
                    }
                }
                loop {
                    match Message::parse_stream(&buf) {
                        Ok(StreamRead::Incomplete) => break,
                        Ok(StreamRead::Keepalive { used, ping }) => {
                            buf.drain(..used);
                            if !ping {
                                let _ = t.events.send(TransportEvent::Pong { flow });
                            } else if !t.silent.load(Ordering::Relaxed) {
                                t.send_raw(&flow, b"\r\n".to_vec(), false);
                            }
                        }
                        Ok(StreamRead::Message(m, used)) => {
                            got_message = true;
                            if let Some(slot) = &slot {
                                slot.spoke();
                            }
                            t.log.record(
                                Direction::Received,
                                t.protocol.via(),
                                t.local,
                                peer,
                                &buf[..used],
                            );
                            buf.drain(..used);
                            let _ = t.events.send(TransportEvent::Message { msg: m, flow });
                        }
                        Err(error) => {
                            // A stream cannot resynchronise after garbage: drop the connection.
                            let _ = t.events.send(TransportEvent::Garbage { peer, error });
                            buf.clear();
                            t.close(&flow);
                            break;
                        }
                    }
                }
            };
            t.writers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            drop(slot);
            let _ = t.events.send(TransportEvent::Closed { flow, error });
        });
        flow
    }

    /// Opens a flow to a peer: nothing to do for UDP; a TCP connection or a TLS handshake
    /// (checking the certificate against `server_name`) otherwise.
    pub async fn connect(
        &self,
        peer: SocketAddr,
        server_name: &str,
    ) -> Result<Flow, TransportError> {
        let io_err = |what, e: std::io::Error| TransportError::Io {
            protocol: self.protocol.via(),
            what,
            addr: peer,
            error: e.to_string(),
        };
        match self.protocol {
            Protocol::Udp => Ok(Flow::Udp(peer)),
            Protocol::Tcp => {
                let s = TcpStream::connect(peer)
                    .await
                    .map_err(|e| io_err("connect to", e))?;
                let _ = s.set_nodelay(true);
                Ok(self.register(s, peer, None))
            }
            Protocol::Tls => {
                let (cfg, trust, sent) = self.tls_client.clone().ok_or(
                    TransportError::TlsConfig("no TLS client configuration".into()),
                )?;
                let s = TcpStream::connect(peer)
                    .await
                    .map_err(|e| io_err("connect to", e))?;
                let _ = s.set_nodelay(true);
                let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
                    .map_err(|_| {
                        TransportError::TlsConfig(format!(
                            "'{server_name}' is not a valid TLS server name"
                        ))
                    })?;
                let tls = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, s)
                    .await
                    .map_err(|e| TransportError::Tls(TlsFailure::from_io(&e, sent, &trust)))?;
                Ok(self.register(tls, peer, None))
            }
        }
    }

    /// Sends a message on a flow.
    pub fn send(&self, flow: &Flow, msg: &Message) -> Result<(), TransportError> {
        let bytes = msg.to_bytes();
        if self.send_raw(flow, bytes, true) {
            Ok(())
        } else {
            Err(TransportError::Closed(flow.peer()))
        }
    }

    fn send_raw(&self, flow: &Flow, bytes: Vec<u8>, log: bool) -> bool {
        if log {
            self.log.record(
                Direction::Sent,
                self.protocol.via(),
                self.local,
                flow.peer(),
                &bytes,
            );
        }
        match flow {
            Flow::Udp(peer) => match &self.udp {
                // A full socket buffer drops the datagram, as the network may; the
                // transaction retransmits.
                Some(s) => {
                    if let Err(e) = s.send_to(&bytes, *peer) {
                        tracing::debug!(%peer, "UDP send: {e}");
                    }
                    true
                }
                None => false,
            },
            Flow::Stream { id, .. } => {
                let w = self.writers.lock().unwrap_or_else(|p| p.into_inner());
                w.get(id).is_some_and(|w| w.send(bytes).is_ok())
            }
        }
    }

    /// Sends an RFC 5626 CRLF ping (`\r\n\r\n`) on a connection; its pong comes back as
    /// [`TransportEvent::Pong`]. Nothing happens on UDP.
    pub fn send_ping(&self, flow: &Flow) -> Result<(), TransportError> {
        match flow {
            Flow::Udp(_) => Ok(()),
            Flow::Stream { .. } => {
                if self.send_raw(flow, b"\r\n\r\n".to_vec(), false) {
                    Ok(())
                } else {
                    Err(TransportError::Closed(flow.peer()))
                }
            }
        }
    }

    /// Sends a STUN Binding request (an RFC 5626 4.4.2 keepalive) over UDP.
    pub fn send_stun(
        &self,
        flow: &Flow,
        id: &super::stun::TransactionId,
    ) -> Result<(), TransportError> {
        match (flow, &self.udp) {
            (Flow::Udp(peer), Some(s)) => {
                let _ = s.send_to(&super::stun::binding_request(id), *peer);
                Ok(())
            }
            _ => Err(TransportError::Closed(flow.peer())),
        }
    }

    /// Stops (`true`) or resumes answering CRLF pings, so that a server can play dead
    /// without closing its connections.
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::Relaxed);
    }

    /// Closes a stream connection.
    pub fn close(&self, flow: &Flow) {
        if let Flow::Stream { id, .. } = flow {
            self.writers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
    }
}
