//! What a fleet's endpoints register with and how: the registrars in order, the outbound
//! proxy, detection and keepalives ([`Policy`]), and each endpoint's identity.

use std::net::SocketAddr;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::sip::transaction::TimerValues;
use crate::sip::transport::Protocol;
use crate::sip::uri::Uri;

/// A registrar to register with: the four things a phone is configured with are kept apart
/// (the domain of its address of record, the registrar's address, the name its TLS
/// certificate must carry, and an outbound proxy in [`Policy::outbound`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarSpec {
    /// A name for reports (`primary`, `backup`, a host name).
    pub name: String,
    /// The registrar's address.
    pub addr: SocketAddr,
    /// The domain of our address of record: From and To are `sip:<user>@<domain>` (a host,
    /// with a port only when one was given).
    pub domain: Uri,
    /// The Request-URI of REGISTER, and of the OPTIONS probes and keepalives: the registrar
    /// itself with its port, so that it takes them as its own (a proxy on port 5070 relays a
    /// request for `sip:127.0.0.1`, which means port 5060, elsewhere).
    pub request_uri: Uri,
    /// The name its TLS certificate must carry.
    pub tls_name: String,
}

impl RegistrarSpec {
    /// A registrar at `addr`, known as `host` (a name, or the address's IP), with the
    /// defaults: the domain is `host`, the Request-URI `sip:<host>:<port>` (no port when it is
    /// the transport's default), the TLS name `host`.
    pub fn at(name: &str, host: &str, addr: SocketAddr, protocol: Protocol) -> RegistrarSpec {
        let default_port = if protocol == Protocol::Tls {
            5061
        } else {
            5060
        };
        let port = (addr.port() != default_port).then_some(addr.port());
        let mut request_uri = Uri::new(None, host, port);
        if protocol != Protocol::Udp {
            request_uri.set_param("transport", Some(&protocol.via().to_ascii_lowercase()));
        }
        RegistrarSpec {
            name: name.to_owned(),
            addr,
            domain: Uri::new(None, host, None),
            request_uri,
            tls_name: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        }
    }

    /// The address of record of `user` (or of the domain alone).
    pub fn aor(&self, user: Option<&str>) -> Uri {
        Uri::new(user, &self.domain.host, self.domain.port)
    }
}

/// A proxy every request goes through (RFC 3261 8.1.2: a pre-loaded Route with `lr`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundProxy {
    /// Its address.
    pub addr: SocketAddr,
    /// The Route our requests carry: `sip:<host>:<port>;lr`.
    pub route: Uri,
    /// The name its TLS certificate must carry.
    pub tls_name: String,
}

/// How quickly a registrar that stops answering is declared lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Detection {
    /// After a failed keepalive or refresh, probe again at once; declare the registrar lost
    /// after `failures` consecutive failures.
    Fast,
    /// Keep the normal keepalive interval after a failure, so `failures` failures span several
    /// intervals: a lossy network does not cause failovers.
    Tolerant,
}

/// The settings every endpoint of a fleet shares.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Registrars in order of preference (the first is the primary).
    pub registrars: Vec<RegistrarSpec>,
    /// Signaling transport.
    pub protocol: Protocol,
    /// Our address, for Via and Contact.
    pub local: SocketAddr,
    /// Requested registration lifetime, seconds (3600).
    pub expires: u32,
    /// Refresh this long before the granted lifetime ends (5 s).
    pub refresh_before: Duration,
    /// Spread refreshes: the first refresh after a registration may come early, to land on the
    /// endpoint's phase of the refresh interval.
    pub spread_refreshes: bool,
    /// Transaction timers (T1 sets the retransmission start and the 64*T1 give-up).
    pub timers: TimerValues,
    /// CRLF ping interval on TCP/TLS (RFC 5626 4.4.1); `None`: no CRLF keepalive.
    pub crlf_keepalive: Option<Duration>,
    /// OPTIONS ping interval on any transport; `None`: no OPTIONS keepalive.
    pub options_keepalive: Option<Duration>,
    /// STUN keepalive interval over UDP (RFC 5626 4.4.2); `None`: none.
    pub stun_keepalive: Option<Duration>,
    /// How long a keepalive may wait for its pong or response (10 s, RFC 5626 4.4.1).
    pub keepalive_timeout: Duration,
    /// Failure detection mode.
    pub detection: Detection,
    /// Consecutive failures that declare a registrar lost.
    pub failures: u32,
    /// While on a backup, how often to probe the higher-priority registrars.
    pub probe_interval: Duration,
    /// After every registrar failed (or a registrar refused us), wait this long to start over.
    pub retry_after: Duration,
    /// A proxy every request goes through, whatever the registrar.
    pub outbound: Option<OutboundProxy>,
    /// RFC 5626 outbound: Contacts carry `+sip.instance` (a URN per endpoint) and `reg-id`.
    pub instance_id: bool,
}

impl Policy {
    /// Defaults for these registrars: Expires 3600, refresh 5 s early, spread refreshes, RFC
    /// 3261 timers, no keepalive, fast detection after 2 failures, probes every 30 s, retry
    /// after 30 s.
    pub fn new(registrars: Vec<RegistrarSpec>, protocol: Protocol, local: SocketAddr) -> Policy {
        Policy {
            registrars,
            protocol,
            local,
            expires: 3600,
            refresh_before: Duration::from_secs(5),
            spread_refreshes: true,
            timers: TimerValues::default(),
            crlf_keepalive: None,
            options_keepalive: None,
            stun_keepalive: None,
            keepalive_timeout: Duration::from_secs(10),
            detection: Detection::Fast,
            failures: 2,
            probe_interval: Duration::from_secs(30),
            retry_after: Duration::from_secs(30),
            outbound: None,
            instance_id: false,
        }
    }

    /// Where requests for `registrar` go, and the TLS name to verify there: the outbound
    /// proxy when there is one, else the registrar.
    pub fn next_hop(&self, registrar: usize) -> (SocketAddr, &str) {
        match &self.outbound {
            Some(o) => (o.addr, &o.tls_name),
            None => {
                let r = &self.registrars[registrar];
                (r.addr, &r.tls_name)
            }
        }
    }

    /// The keepalive in use: CRLF on reliable transports and STUN over UDP when configured,
    /// else OPTIONS.
    pub fn keepalive(&self) -> Option<(KeepaliveKind, Duration)> {
        let reliable = self.protocol.reliable();
        match (
            self.crlf_keepalive,
            self.stun_keepalive,
            self.options_keepalive,
        ) {
            (Some(k), _, _) if reliable => Some((KeepaliveKind::Crlf, k)),
            (_, Some(k), _) if !reliable => Some((KeepaliveKind::Stun, k)),
            (_, _, Some(k)) => Some((KeepaliveKind::Options, k)),
            _ => None,
        }
    }

    /// The longest time from a registrar's death to its declaration as lost, when keepalives
    /// run (`None` otherwise: detection then rides on refreshes). With interval K, timeout P and
    /// N failures: fast mode sends its first probe within K and then N probes back to back
    /// (K + N*P); tolerant mode needs N probes K apart (N*K + P).
    pub fn detection_budget(&self) -> Option<Duration> {
        let (_, k) = self.keepalive()?;
        let p = self.keepalive_timeout;
        let n = self.failures.max(1);
        Some(match self.detection {
            Detection::Fast => k + p * n,
            Detection::Tolerant => k * n + p,
        })
    }
}

/// Which keepalive an endpoint sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepaliveKind {
    /// RFC 5626 double-CRLF ping, single-CRLF pong.
    Crlf,
    /// RFC 5626 4.4.2: a STUN Binding request over UDP, answered by the registrar.
    Stun,
    /// An OPTIONS request; any response proves the registrar alive.
    Options,
}

/// Who an endpoint is.
pub struct Identity {
    /// User part of the address of record (and of the Contact).
    pub user: String,
    /// Digest credentials: user name and password (zeroized on drop).
    pub auth: Option<(String, Zeroizing<String>)>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("auth_user", &self.auth.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}
