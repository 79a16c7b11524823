//! The sans-IO [`Registrar`] on a real SIP transport (UDP, TCP or TLS), for tests and for
//! `srtp-control registrar`. It can be made to play dead (answer nothing, not even CRLF pings,
//! while keeping its sockets), and brought back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::registrar::{Registrar, RegistrarConfig, RegistrarCounts};
use crate::sip::log::MessageLog;
use crate::sip::tls::TlsSettings;
use crate::sip::transport::{Protocol, SipTransport, TransportError, TransportEvent};

/// A running registrar.
#[derive(Clone, Debug)]
pub struct RegistrarServer {
    transport: SipTransport,
    registrar: Arc<Mutex<Registrar>>,
}

impl RegistrarServer {
    /// Listens on `addr` and answers. Must run inside a tokio runtime.
    pub async fn start(
        protocol: Protocol,
        addr: SocketAddr,
        tls: &TlsSettings,
        cfg: RegistrarConfig,
    ) -> Result<RegistrarServer, TransportError> {
        let (transport, mut events) =
            SipTransport::bind(protocol, addr, tls, MessageLog::off()).await?;
        let registrar = Arc::new(Mutex::new(Registrar::new(cfg, Instant::now())));
        let (t, r) = (transport.clone(), registrar.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let TransportEvent::Message { msg, flow } = ev {
                    let resp = r
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .handle_request(Instant::now(), &msg);
                    if let Some(resp) = resp {
                        let _ = t.send(&flow, &resp);
                    }
                }
            }
        });
        Ok(RegistrarServer {
            transport,
            registrar,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// Plays dead (`false`: no answer to anything, CRLF pings included) or comes back.
    pub fn set_up(&self, up: bool) {
        self.transport.set_silent(!up);
        self.lock().set_up(up);
    }

    /// Live bindings now.
    pub fn bindings(&self) -> usize {
        self.lock().bindings(Instant::now())
    }

    /// What it counted.
    pub fn counts(&self) -> RegistrarCounts {
        self.lock().counts().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registrar> {
        self.registrar.lock().unwrap_or_else(|p| p.into_inner())
    }
}
