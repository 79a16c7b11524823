//! The daemon's TOML config (`configs/engine.toml` lists every option with its default).
//!
//! Unknown keys are errors that name the key; values are checked after parsing (port range,
//! addresses, core list) and errors name the key too.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::ctl::CtlOptions;
use crate::io::socket::SocketOptions;
use crate::io::{BackendKind, IoConfig};
use crate::model::WatchOptions;
use crate::proto::dtls::{DtlsBackend, DtlsOptions, KeyKind};
use crate::runtime::{DtlsSettings, EngineOptions, MediaOptions};

/// A config problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type (the message names the key).
    #[error("{0}")]
    Parse(String),
    /// A value out of range.
    #[error("{key}: {message}")]
    Value {
        /// The key, as `section.name`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// `[engine]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Worker threads; 0 = one per online core.
    pub workers: usize,
    /// Cores to pin workers to, in worker order; empty = worker i on core i.
    pub cores: Vec<usize>,
    /// CNAME in RTCP reports.
    pub cname: String,
}

impl Default for EngineSection {
    fn default() -> EngineSection {
        EngineSection {
            workers: 0,
            cores: Vec::new(),
            cname: MediaOptions::default().cname,
        }
    }
}

/// `[io]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IoSection {
    /// `io_uring` or `epoll`.
    pub backend: BackendKind,
    /// Fall back to epoll when io_uring is refused.
    pub fallback: bool,
    /// Receive buffers per worker.
    pub rx_buffers: u32,
    /// Send buffers per worker.
    pub tx_buffers: u32,
    /// Completions to wait for in one wait (io_uring).
    pub wait_batch: u32,
    /// How long to wait for that batch, µs (io_uring, Linux 6.12+).
    pub batch_wait_us: u32,
}

impl Default for IoSection {
    fn default() -> IoSection {
        let io = IoConfig::default();
        IoSection {
            backend: BackendKind::IoUring,
            fallback: true,
            rx_buffers: io.rx_buffers,
            tx_buffers: io.tx_buffers,
            wait_batch: io.wait_batch,
            batch_wait_us: io.batch_wait_us,
        }
    }
}

/// `[sockets]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketsSection {
    /// Local IPs media sockets bind on; the first is the default.
    pub local_ips: Vec<String>,
    /// First port of the media range.
    pub port_min: u16,
    /// Last port of the media range.
    pub port_max: u16,
    /// SO_RCVBUF per socket in bytes; 0 = kernel default.
    pub recv_buffer: usize,
    /// SO_SNDBUF per socket in bytes; 0 = kernel default.
    pub send_buffer: usize,
    /// Connect per-stream sockets to their peer once known.
    pub connect: bool,
    /// Drop media not from the signalled address.
    pub strict_source: bool,
}

impl Default for SocketsSection {
    fn default() -> SocketsSection {
        let d = MediaOptions::default();
        SocketsSection {
            local_ips: vec!["127.0.0.1".into()],
            port_min: d.port_min,
            port_max: d.port_max,
            recv_buffer: 0,
            send_buffer: 0,
            connect: true,
            strict_source: false,
        }
    }
}

/// `[streams]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsSection {
    /// Most streams per worker.
    pub max_per_worker: usize,
    /// Default silence timeout for `media_silent` events, ms (0: never).
    pub silence_ms: u32,
    /// Default authentication failures per `auth_failures` event (0: never).
    pub auth_failure_threshold: u32,
}

impl Default for StreamsSection {
    fn default() -> StreamsSection {
        let w = WatchOptions::default();
        StreamsSection {
            max_per_worker: MediaOptions::default().max_streams,
            silence_ms: w.silence_ms,
            auth_failure_threshold: w.auth_failure_threshold,
        }
    }
}

/// `[control]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Control socket path; empty = no control socket.
    pub path: String,
    /// Permission bits of the socket file.
    pub mode: u32,
    /// Group to give the socket to; empty = the engine's own.
    pub group: String,
    /// Most control connections at once.
    pub max_connections: usize,
    /// Longest request line, bytes.
    pub max_line_bytes: usize,
    /// Most streams in one batch request.
    pub max_batch: usize,
    /// Events queued for a subscriber before more are dropped.
    pub max_queued_events: usize,
    /// A connection that sends no request within this long of opening is closed, ms.
    pub first_request_timeout_ms: u64,
}

impl Default for ControlSection {
    fn default() -> ControlSection {
        let d = CtlOptions::default();
        ControlSection {
            path: d.path.display().to_string(),
            mode: d.mode,
            group: String::new(),
            max_connections: d.max_connections,
            max_line_bytes: d.max_line_bytes,
            max_batch: d.max_batch,
            max_queued_events: d.max_queued_events,
            first_request_timeout_ms: d.first_request_timeout.as_millis() as u64,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Address of the Prometheus endpoint (`/metrics`); empty = none.
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> MetricsSection {
        MetricsSection {
            listen: "127.0.0.1:9650".into(),
        }
    }
}

/// `[dtls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DtlsSection {
    /// The implementation: `auto` (per peer), `openssl` (any peer: RSA and ECDSA certificates,
    /// four profiles) or `dimpl` (ECDSA only).
    pub backend: DtlsBackend,
    /// The engine's certificate, PEM (ECDSA P-256 or P-384, or RSA); empty: a self-signed one
    /// is generated at start, with a `key` key.
    pub certificate: String,
    /// Its private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub private_key: String,
    /// The kind of key generated when no certificate is given: `ecdsa` (P-256) or `rsa`
    /// (2048 bits).
    pub key: KeyKind,
    /// A handshake's deadline, ms.
    pub handshake_timeout_ms: u64,
    /// First retransmission timeout of a flight, ms (doubles on each retransmission).
    pub retransmit_initial_ms: u64,
    /// The most a retransmission timeout grows to, ms (openssl backend).
    pub retransmit_max_ms: u64,
    /// Retransmissions per flight.
    pub retransmit_count: usize,
    /// How long a server keeps an established session to answer a lost last flight, ms.
    pub linger_ms: u64,
    /// Largest DTLS datagram, bytes.
    pub mtu: usize,
}

impl Default for DtlsSection {
    fn default() -> DtlsSection {
        let d = DtlsOptions::default();
        DtlsSection {
            backend: d.backend,
            certificate: String::new(),
            private_key: String::new(),
            key: KeyKind::Ecdsa,
            handshake_timeout_ms: d.handshake_timeout.as_millis() as u64,
            retransmit_initial_ms: d.retransmit_initial.as_millis() as u64,
            retransmit_max_ms: d.retransmit_max.as_millis() as u64,
            retransmit_count: d.retransmit_count,
            linger_ms: d.linger.as_millis() as u64,
            mtu: d.mtu,
        }
    }
}

impl DtlsSection {
    /// The handshake timings this section describes.
    pub fn options(&self) -> DtlsOptions {
        DtlsOptions {
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            retransmit_initial: Duration::from_millis(self.retransmit_initial_ms),
            retransmit_max: Duration::from_millis(self.retransmit_max_ms),
            retransmit_count: self.retransmit_count,
            linger: Duration::from_millis(self.linger_ms),
            mtu: self.mtu,
            backend: self.backend,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// error, warn, info, debug or trace.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> LogSection {
        LogSection {
            level: "info".into(),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[engine]`
    pub engine: EngineSection,
    /// `[io]`
    pub io: IoSection,
    /// `[sockets]`
    pub sockets: SocketsSection,
    /// `[streams]`
    pub streams: StreamsSection,
    /// `[control]`
    pub control: ControlSection,
    /// `[metrics]`
    pub metrics: MetricsSection,
    /// `[dtls]`
    pub dtls: DtlsSection,
    /// `[log]`
    pub log: LogSection,
}

impl Config {
    /// Parses and checks a config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        c.check()?;
        Ok(c)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        Config::parse(&text)
    }

    /// Range and consistency checks, naming the key.
    pub fn check(&self) -> Result<(), ConfigError> {
        let v = |key, message: String| Err(ConfigError::Value { key, message });
        if self.sockets.local_ips.is_empty() {
            return v(
                "sockets.local_ips",
                "at least one local IP is needed".into(),
            );
        }
        for ip in &self.sockets.local_ips {
            if ip.parse::<IpAddr>().is_err() {
                return v("sockets.local_ips", format!("{ip:?} is not an IP address"));
            }
        }
        let workers = self.workers();
        if self.sockets.port_min == 0 || self.sockets.port_max < self.sockets.port_min {
            return v(
                "sockets.port_max",
                format!(
                    "range {}-{} is empty",
                    self.sockets.port_min, self.sockets.port_max
                ),
            );
        }
        let span = usize::from(self.sockets.port_max - self.sockets.port_min) + 1;
        // Each worker owns whole port pairs: it needs at least one pair.
        if span < 2 * workers {
            return v(
                "sockets.port_max",
                format!(
                    "range {}-{} has {span} ports, too small for {workers} workers (2 per worker at least)",
                    self.sockets.port_min, self.sockets.port_max
                ),
            );
        }
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        if let Some(&c) = self.engine.cores.iter().find(|&&c| c >= online.max(1024)) {
            return v("engine.cores", format!("core {c} does not exist"));
        }
        if !self.engine.cores.is_empty() && self.engine.cores.len() < workers {
            return v(
                "engine.cores",
                format!(
                    "{} cores listed for {workers} workers",
                    self.engine.cores.len()
                ),
            );
        }
        if !matches!(
            self.log.level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return v(
                "log.level",
                format!(
                    "{:?} is not error, warn, info, debug or trace",
                    self.log.level
                ),
            );
        }
        if self.io.rx_buffers < 64 || self.io.rx_buffers > 32_768 {
            return v(
                "io.rx_buffers",
                format!("{} is outside 64-32768", self.io.rx_buffers),
            );
        }
        if self.io.tx_buffers < 16 || self.io.tx_buffers > 65_535 {
            return v(
                "io.tx_buffers",
                format!("{} is outside 16-65535", self.io.tx_buffers),
            );
        }
        if self.streams.max_per_worker == 0 {
            return v("streams.max_per_worker", "must be at least 1".into());
        }
        if self.control.mode > 0o777 || self.control.mode & 0o600 != 0o600 {
            return v(
                "control.mode",
                format!(
                    "{:#o} must be permission bits that let the owner read and write (e.g. 0o600, 0o660)",
                    self.control.mode
                ),
            );
        }
        if self.control.max_connections == 0 {
            return v("control.max_connections", "must be at least 1".into());
        }
        if self.control.max_line_bytes < 1024 {
            return v("control.max_line_bytes", "must be at least 1024".into());
        }
        if self.control.max_batch == 0 {
            return v("control.max_batch", "must be at least 1".into());
        }
        let d = &self.dtls;
        if d.certificate.is_empty() != d.private_key.is_empty() {
            return v(
                "dtls.private_key",
                "dtls.certificate and dtls.private_key go together (both empty: generate one)"
                    .into(),
            );
        }
        if !(100..=600_000).contains(&d.handshake_timeout_ms) {
            return v(
                "dtls.handshake_timeout_ms",
                format!("{} is outside 100-600000", d.handshake_timeout_ms),
            );
        }
        if !(10..=60_000).contains(&d.retransmit_initial_ms) {
            return v(
                "dtls.retransmit_initial_ms",
                format!("{} is outside 10-60000", d.retransmit_initial_ms),
            );
        }
        if d.retransmit_max_ms < d.retransmit_initial_ms || d.retransmit_max_ms > 600_000 {
            return v(
                "dtls.retransmit_max_ms",
                format!(
                    "{} is below retransmit_initial_ms ({}) or above 600000",
                    d.retransmit_max_ms, d.retransmit_initial_ms
                ),
            );
        }
        if d.backend == DtlsBackend::Dimpl && d.key == KeyKind::Rsa {
            return v(
                "dtls.key",
                "the dimpl backend signs with ECDSA only: use backend = \"auto\" or \"openssl\" for an RSA key"
                    .into(),
            );
        }
        if d.retransmit_count > 20 {
            return v(
                "dtls.retransmit_count",
                format!("{} is more than 20", d.retransmit_count),
            );
        }
        if !(576..=9000).contains(&d.mtu) {
            return v("dtls.mtu", format!("{} is outside 576-9000", d.mtu));
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return v(
                "metrics.listen",
                format!("{:?} is not an address (ip:port)", self.metrics.listen),
            );
        }
        Ok(())
    }

    /// What can only be checked on this host, before anything starts: workers against the
    /// cores, the local IPs among the host's addresses, the control socket's directory and
    /// group, the DTLS certificate and key (present, readable, and a pair). Returns the
    /// warnings (a control socket others may use) when every check holds.
    pub fn check_host(&self) -> Result<Vec<String>, ConfigError> {
        let v = |key, message: String| Err(ConfigError::Value { key, message });
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = self.workers();
        // The daemon pins one worker per core: more workers than cores only contend (and
        // each holds its ring, buffers and slot table: thousands exhaust memory).
        if workers > online {
            return v(
                "engine.workers",
                format!(
                    "{workers} workers on a host with {online} cores: at most one pinned worker per core (0 means one per core)"
                ),
            );
        }
        for ip in &self.sockets.local_ips {
            let Ok(addr) = ip.parse::<IpAddr>() else {
                continue;
            };
            if let Err(e) = std::net::UdpSocket::bind(SocketAddr::new(addr, 0)) {
                return v(
                    "sockets.local_ips",
                    format!("{ip} is not an address of this host ({e})"),
                );
            }
        }
        let mut warnings = Vec::new();
        if !self.control.path.is_empty() {
            let path = Path::new(&self.control.path);
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !dir.is_dir() {
                return v(
                    "control.path",
                    format!("the directory {} does not exist", dir.display()),
                );
            }
            if !self.control.group.is_empty() && crate::ctl::group_id(&self.control.group).is_none()
            {
                return v(
                    "control.group",
                    format!("no group named {:?} on this host", self.control.group),
                );
            }
            if self.control.mode & 0o117 != 0 {
                warnings.push(format!(
                    "control.mode {:#o} lets more than the owner and its group use the control socket (0o660 at most is advised): whoever can connect can create, change and delete streams",
                    self.control.mode
                ));
            }
        }
        let d = &self.dtls;
        if !d.certificate.is_empty() {
            crate::proto::dtls::DtlsIdentity::from_pem_files(&d.certificate, &d.private_key)
                .map_err(|e| ConfigError::Value {
                    key: "dtls.certificate",
                    message: e.to_string(),
                })?;
        }
        Ok(warnings)
    }

    /// Workers the config asks for (0 resolved to the online cores).
    pub fn workers(&self) -> usize {
        if self.engine.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.engine.workers
        }
    }

    /// The engine options this config describes.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            workers: self.engine.workers,
            cores: self.engine.cores.clone(),
            pin: true,
            backend: self.io.backend,
            fallback: self.io.fallback,
            io: IoConfig {
                rx_buffers: self.io.rx_buffers,
                tx_buffers: self.io.tx_buffers,
                max_sockets: IoConfig::default().max_sockets,
                wait_batch: self.io.wait_batch,
                batch_wait_us: self.io.batch_wait_us,
            },
            media: MediaOptions {
                local_ips: self
                    .sockets
                    .local_ips
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect(),
                port_min: self.sockets.port_min,
                port_max: self.sockets.port_max,
                socket: SocketOptions {
                    recv_buffer: self.sockets.recv_buffer,
                    send_buffer: self.sockets.send_buffer,
                },
                connect: self.sockets.connect,
                strict_source: self.sockets.strict_source,
                max_streams: self.streams.max_per_worker,
                cname: self.engine.cname.clone(),
                watch: WatchOptions {
                    silence_ms: self.streams.silence_ms,
                    auth_failure_threshold: self.streams.auth_failure_threshold,
                },
                dtls: None,
            },
            dtls: DtlsSettings {
                pem: (!self.dtls.certificate.is_empty())
                    .then(|| (self.dtls.certificate.clone(), self.dtls.private_key.clone())),
                identity: None,
                key: self.dtls.key,
                options: self.dtls.options(),
            },
        }
    }

    /// The control socket options (`None` when `control.path` is empty).
    pub fn ctl_options(&self) -> Option<CtlOptions> {
        let c = &self.control;
        (!c.path.is_empty()).then(|| CtlOptions {
            path: c.path.clone().into(),
            mode: c.mode,
            group: (!c.group.is_empty()).then(|| c.group.clone()),
            max_connections: c.max_connections,
            max_line_bytes: c.max_line_bytes,
            max_batch: c.max_batch,
            max_queued_events: c.max_queued_events,
            first_request_timeout: Duration::from_millis(c.first_request_timeout_ms.max(100)),
        })
    }

    /// The metrics address (`None` when `metrics.listen` is empty).
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.metrics.listen.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_is_the_defaults() {
        let text = include_str!("../../configs/engine.toml");
        let c = Config::parse(text).unwrap();
        let d = Config::default();
        assert_eq!(
            format!("{c:?}"),
            format!("{d:?}"),
            "configs/engine.toml must list the defaults"
        );
        assert_eq!(
            Config::parse("").unwrap().sockets.port_min,
            d.sockets.port_min
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[io]\nbakend = \"epoll\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bakend"), "{e}");
        let e = Config::parse("[sockets]\nlocal_ips = [\"127.0.0.300\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sockets.local_ips") && e.contains("127.0.0.300"),
            "{e}"
        );
        let e =
            Config::parse("[sockets]\nport_min = 40000\nport_max = 40000\n[engine]\nworkers = 2\n")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("sockets.port_max") && e.contains("too small"),
            "{e}"
        );
        let e = Config::parse("[io]\nbackend = \"kqueue\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kqueue"), "{e}");
        let e = Config::parse("[sockets]\nport_min = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port_min"), "{e}");
        let e = Config::parse("[log]\nlevel = \"loud\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.level"), "{e}");
        let e = Config::parse("[dtls]\ncertificate = \"/x.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dtls.private_key"), "{e}");
        let e = Config::parse("[dtls]\nmtu = 100\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dtls.mtu"), "{e}");
        let e = Config::parse("[nonsense]\n").unwrap_err().to_string();
        assert!(e.contains("nonsense"), "{e}");
    }
}
