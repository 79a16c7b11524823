//! A load run's scenario: a TOML file where every key has a default, so the smallest scenario
//! is empty (`srtp-control demo` is [`Scenario::demo`]). Unknown keys are refused by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use srtp_engine::proto::dtls::Fingerprint;
use srtp_engine::proto::srtp::Suite;

use crate::sdp::{Codec, KeyMethod, SecurityConfig, SrtpPolicy};
use crate::sip::transport::Protocol;
use crate::sip::uri::Uri;

pub use crate::config_file::{ConfigError as ScenarioError, invalid, read_text};

/// Which sides of the calls this process plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Places calls to `sip.target`.
    Caller,
    /// Answers calls on `sip.answerer_listen`.
    Answerer,
    /// Both, on this machine: the callers call our own answerer (or `sip.target` through a
    /// proxy).
    #[default]
    Both,
}

/// The keying of the calls placed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// SDES `a=crypto`.
    #[default]
    Sdes,
    /// DTLS-SRTP.
    Dtls,
    /// Both offered in each call (the answerer picks).
    Dual,
    /// Calls alternate: SDES, DTLS-SRTP, SDES, ...
    Mixed,
}

/// What the answerer's media does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaMode {
    /// Both ends send and receive at codec pace.
    #[default]
    Sendrecv,
    /// The caller sends; the answerer reflects each packet (re-protected with its own keys).
    Echo,
}

/// `[engine]`: the media engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// An engine's control socket; empty: start one in this process.
    pub socket: Option<PathBuf>,
    /// Embedded engine: worker threads (0: one per online core).
    pub workers: usize,
    /// Embedded engine: pin workers to cores.
    pub pin: bool,
    /// Embedded engine: local media ports.
    pub port_min: u16,
    /// Embedded engine: last local media port.
    pub port_max: u16,
    /// Embedded engine: the address media binds on and the SDP names (a pod or node's
    /// address when agents run on several machines).
    pub local_ip: std::net::IpAddr,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            socket: None,
            workers: 0,
            pin: true,
            port_min: 20_000,
            port_max: 49_999,
            local_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        }
    }
}

/// `[sip]`: signaling.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// Where callers listen (port 0: any).
    pub caller_listen: SocketAddr,
    /// Where the answerer listens (port 0: any; role `both` then calls it there).
    pub answerer_listen: SocketAddr,
    /// Whom to call (role `caller`, or `both` through a proxy): `sip:user@host:port`.
    pub target: Option<String>,
    /// Several answerers to spread calls over (call `i` goes to the `i % n`th), instead of
    /// `target`. A target whose host is a name with several addresses (a headless Service)
    /// counts once per address.
    pub targets: Vec<String>,
    /// Send calls to this address instead of the target's host (an SBC or proxy).
    pub proxy: Option<SocketAddr>,
    /// TLS: `system`, `skip`, or a CA file. Role `both` over TLS without a certificate uses a
    /// lab CA made for the run, and trusts it.
    pub tls_verify: String,
    /// TLS certificate (PEM) of the answerer, and of the callers for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The answerer requires client certificates from this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Digest credentials for challenges, `user:password`.
    pub auth: Option<String>,
    /// The answerer challenges INVITEs: `realm:password`.
    pub challenge: Option<String>,
    /// Transaction timer T1 in ms (RFC 3261: 500); a call with no answer fails after 64*T1.
    pub t1_ms: u64,
    /// User agents per side (each its own SIP port and task), so that signaling and the
    /// engine requests it waits on proceed in parallel.
    pub agents: usize,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            transport: "udp".into(),
            caller_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            answerer_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            target: None,
            targets: Vec::new(),
            proxy: None,
            tls_verify: "system".into(),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            auth: None,
            challenge: None,
            t1_ms: 500,
            agents: 4,
        }
    }
}

/// `[security]`: SRTP.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// `off`, `offered` or `required`.
    pub srtp: SrtpPolicy,
    /// `sdes`, `dtls`, `dual` or `mixed`.
    pub method: Method,
    /// Suites in preference order (SDP names); empty: all six.
    pub suites: Vec<String>,
    /// The answerer's suites when they differ from the callers' (empty: the same).
    pub answerer_suites: Vec<String>,
    /// Codecs in preference order: `pcmu`, `pcma`, `g722`, `opus`.
    pub codecs: Vec<String>,
    /// Offer rtcp-mux.
    pub rtcp_mux: bool,
    /// How long a DTLS-SRTP call waits for its handshake before it is failed, ms.
    pub dtls_timeout_ms: u64,
    /// The far end's engine certificates (`sha-256 AB:...`, from its `hello`), to say per
    /// call whether DTLS went end to end or was terminated by a middlebox. With role `both`
    /// our own engine's is used.
    pub far_end_fingerprints: Vec<String>,
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection {
            srtp: SrtpPolicy::Required,
            method: Method::Sdes,
            suites: Vec::new(),
            answerer_suites: Vec::new(),
            codecs: vec!["pcmu".into()],
            rtcp_mux: true,
            dtls_timeout_ms: 10_000,
            far_end_fingerprints: Vec::new(),
        }
    }
}

/// `[load]`: how many calls, how fast, how long.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadSection {
    /// Calls to place (0: as many as `duration_s` allows).
    pub calls: u64,
    /// Stop placing calls after this many seconds (0: when `calls` are placed).
    pub duration_s: f64,
    /// Calls per second once ramped up.
    pub rate: f64,
    /// Seconds over which the rate climbs linearly from 0 to `rate`.
    pub ramp_up_s: f64,
    /// At most this many calls at once; a call waits for a free slot (and the achieved rate
    /// shows it).
    pub max_concurrent: u64,
    /// How long each call is held after it connects, seconds.
    pub hold_s: f64,
    /// Agents that share the scenario (`run --shard I/N`, or I from `JOB_COMPLETION_INDEX`):
    /// each places the calls whose number `i` has `i % shards == I`, on the whole
    /// scenario's schedule.
    pub shards: u32,
}

impl Default for LoadSection {
    fn default() -> Self {
        LoadSection {
            calls: 100,
            duration_s: 0.0,
            rate: 10.0,
            ramp_up_s: 0.0,
            max_concurrent: 1_000,
            hold_s: 5.0,
            shards: 1,
        }
    }
}

/// `[media]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// `sendrecv` or `echo`.
    pub mode: MediaMode,
}

/// `[thresholds]`: what a passing run is. The exit code is 0 when every one holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Calls set up (SIP answered, and DTLS-SRTP established where used), % of attempts.
    pub min_setup_success_percent: f64,
    /// RTP loss over every call's receive direction, %.
    pub max_loss_percent: f64,
    /// The lowest per-call MOS (E-model) allowed.
    pub min_mos: f64,
    /// SRTP/SRTCP authentication failures allowed over the run.
    pub max_auth_failures: u64,
    /// With both ends of the calls here: RTP packets sent that no bucket of the media
    /// balance explains (received, lost in sequence, dropped before the answer or the keys,
    /// rejected, undelivered at hangup), over both directions.
    pub max_unaccounted_packets: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_setup_success_percent: 99.9,
            max_loss_percent: 0.1,
            min_mos: 4.0,
            max_auth_failures: 0,
            max_unaccounted_packets: 0,
        }
    }
}

/// `[report]`: where the results go.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSection {
    /// The directory for `report.json`, `report.html` and `failed-calls.log` (empty: none are
    /// written; the terminal summary is always printed).
    pub dir: Option<PathBuf>,
    /// Put every call's record in the JSON report.
    pub per_call: bool,
    /// Keep the SIP messages of at most this many failed calls.
    pub failed_call_logs: usize,
}

impl Default for ReportSection {
    fn default() -> Self {
        ReportSection {
            dir: None,
            per_call: false,
            failed_call_logs: 100,
        }
    }
}

/// `[answerer.faults]`: our answerer misbehaves on purpose, to show what a caller's report says
/// about equipment that does (and to test it).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Put a fingerprint in SDP that is not our certificate's.
    pub wrong_fingerprint: bool,
    /// Protect media with keys other than those sent in `a=crypto`.
    pub wrong_keys: bool,
    /// Serve TLS with an expired certificate (role `both`, lab CA).
    pub expired_certificate: bool,
}

/// `[answerer]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnswererSection {
    /// Register every answerer agent with this registrar (`host:port`, over
    /// `sip.transport`), so that callers reach it through a proxy by its address of record
    /// (`user@domain`).
    pub register: Option<String>,
    /// The user part the answerers register (and answer as).
    pub user: String,
    /// The domain of the address of record; default: the registrar's IP address.
    pub domain: Option<String>,
    /// Registration lifetime asked for, seconds.
    pub expires: u32,
    /// Deliberate faults.
    pub faults: Faults,
}

impl Default for AnswererSection {
    fn default() -> Self {
        AnswererSection {
            register: None,
            user: "answer".into(),
            domain: None,
            expires: 300,
            faults: Faults::default(),
        }
    }
}

/// A load run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// A name for the report.
    pub name: String,
    /// `caller`, `answerer` or `both`.
    pub role: Role,
    /// The media engine.
    pub engine: EngineSection,
    /// Signaling.
    pub sip: SipSection,
    /// SRTP.
    pub security: SecuritySection,
    /// Calls.
    pub load: LoadSection,
    /// Media.
    pub media: MediaSection,
    /// Pass/fail.
    pub thresholds: Thresholds,
    /// Output.
    pub report: ReportSection,
    /// Our answerer.
    pub answerer: AnswererSection,
    /// This agent's share (`run --shard`; not in the file).
    #[serde(skip)]
    pub shard: super::shard::Shard,
    /// When the calls start, for agents that start apart (`run --start-at`; not in the file).
    #[serde(skip)]
    pub start_at: Option<std::time::SystemTime>,
    /// Serve the run's live figures for Prometheus here (`run --metrics`; not in the file).
    #[serde(skip)]
    pub metrics: Option<SocketAddr>,
    /// Keep serving them this long after the run, for a last scrape (`run --metrics-linger-s`).
    #[serde(skip)]
    pub metrics_linger: std::time::Duration,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        Scenario::parse(&read_text(path)?)
    }

    /// Parses and checks scenario text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Toml(e.to_string()))?;
        s.check()?;
        Ok(s)
    }

    /// The demo: caller and answerer on this machine over UDP, SDES and DTLS-SRTP calls
    /// alternating, 2,000 calls at 200 calls/s held 3 s each, with strict thresholds.
    pub fn demo() -> Scenario {
        Scenario {
            name: "demo: 2,000 SRTP calls on loopback, SDES and DTLS-SRTP alternating".into(),
            security: SecuritySection {
                method: Method::Mixed,
                ..SecuritySection::default()
            },
            load: LoadSection {
                calls: 2_000,
                rate: 200.0,
                ramp_up_s: 1.0,
                max_concurrent: 1_000,
                hold_s: 3.0,
                ..LoadSection::default()
            },
            thresholds: Thresholds {
                min_setup_success_percent: 100.0,
                max_loss_percent: 0.0,
                min_mos: 4.0,
                max_auth_failures: 0,
                max_unaccounted_packets: 0,
            },
            ..Scenario::default()
        }
    }

    /// The transport.
    pub fn protocol(&self) -> Result<Protocol, ScenarioError> {
        Protocol::parse(&self.sip.transport)
            .ok_or_else(|| invalid("sip.transport", "is udp, tcp or tls"))
    }

    /// The target URI, if any (the first of `sip.targets`).
    pub fn target(&self) -> Result<Option<Uri>, ScenarioError> {
        Ok(self.targets()?.into_iter().next())
    }

    /// Whom the callers call: `sip.targets`, or `sip.target`; empty for our own answerer.
    pub fn targets(&self) -> Result<Vec<Uri>, ScenarioError> {
        let (key, list): (&'static str, Vec<&str>) = match &self.sip.target {
            Some(t) => ("sip.target", vec![t.as_str()]),
            None => (
                "sip.targets",
                self.sip.targets.iter().map(String::as_str).collect(),
            ),
        };
        list.into_iter()
            .map(|t| Uri::parse(t).map_err(|e| invalid(key, format!("{t:?}: {e}"))))
            .collect()
    }

    fn suites(key: &'static str, names: &[String]) -> Result<Vec<Suite>, ScenarioError> {
        if names.is_empty() {
            return Ok(Suite::ALL.to_vec());
        }
        names
            .iter()
            .map(|n| {
                Suite::from_sdp_name(n)
                    .ok_or_else(|| invalid(key, format!("{n:?} is not an SRTP suite")))
            })
            .collect()
    }

    /// The callers' (or with `answerer == true`, the answerer's) SDP security settings for
    /// a keying method.
    pub fn security(
        &self,
        method: KeyMethod,
        answerer: bool,
    ) -> Result<SecurityConfig, ScenarioError> {
        let suites = if answerer && !self.security.answerer_suites.is_empty() {
            Scenario::suites("security.answerer_suites", &self.security.answerer_suites)?
        } else {
            Scenario::suites("security.suites", &self.security.suites)?
        };
        let codecs = if self.security.codecs.is_empty() {
            crate::sdp::negotiate::CODECS.to_vec()
        } else {
            self.security
                .codecs
                .iter()
                .map(|c| {
                    Codec::by_name(c).ok_or_else(|| {
                        invalid(
                            "security.codecs",
                            format!("{c:?} is not pcmu, pcma, g722 or opus"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(SecurityConfig {
            policy: self.security.srtp,
            method,
            suites,
            rtcp_mux: self.security.rtcp_mux,
            codecs,
            ..SecurityConfig::default()
        })
    }

    /// The far end's certificates from `security.far_end_fingerprints`.
    pub fn far_end(&self) -> Result<Vec<Fingerprint>, ScenarioError> {
        self.security
            .far_end_fingerprints
            .iter()
            .map(|f| {
                Fingerprint::parse(f)
                    .map_err(|e| invalid("security.far_end_fingerprints", format!("{f:?}: {e}")))
            })
            .collect()
    }

    fn check(&self) -> Result<(), ScenarioError> {
        self.far_end()?;
        let protocol = self.protocol()?;
        let target = self.target()?;
        if self.role == Role::Caller && target.is_none() {
            return Err(invalid(
                "sip.target",
                "role caller needs a target (or sip.targets)",
            ));
        }
        if self.sip.target.is_some() && !self.sip.targets.is_empty() {
            return Err(invalid(
                "sip.targets",
                "set sip.target or sip.targets, not both",
            ));
        }
        if self.load.shards == 0 {
            return Err(invalid("load.shards", "must be at least 1"));
        }
        if self.role != Role::Answerer {
            let l = &self.load;
            if !(l.rate.is_finite() && l.rate > 0.0 && l.rate <= 100_000.0) {
                return Err(invalid(
                    "load.rate",
                    "is calls per second, above 0 and at most 100000",
                ));
            }
            if l.calls == 0 && l.duration_s <= 0.0 {
                return Err(invalid("load.calls", "set calls or duration_s"));
            }
            if l.max_concurrent == 0 {
                return Err(invalid("load.max_concurrent", "must be at least 1"));
            }
        }
        let nonneg = |v: f64, key: &'static str| {
            if (0.0..1e7).contains(&v) {
                Ok(())
            } else {
                Err(invalid(key, "is a number of seconds, 0 or more"))
            }
        };
        nonneg(self.load.hold_s, "load.hold_s")?;
        nonneg(self.load.ramp_up_s, "load.ramp_up_s")?;
        nonneg(self.load.duration_s, "load.duration_s")?;
        if self.sip.agents == 0 || self.sip.agents > 64 {
            return Err(invalid("sip.agents", "is between 1 and 64"));
        }
        if self.sip.t1_ms == 0 || self.sip.t1_ms > 60_000 {
            return Err(invalid("sip.t1_ms", "is between 1 and 60000"));
        }
        if self.engine.port_min > self.engine.port_max {
            return Err(invalid("engine.port_min", "is above engine.port_max"));
        }
        if self.security.srtp == SrtpPolicy::Off && self.security.method != Method::Sdes {
            return Err(invalid(
                "security.method",
                "DTLS-SRTP needs security.srtp offered or required",
            ));
        }
        if self.sip.tls_cert.is_some() != self.sip.tls_key.is_some() {
            return Err(invalid("sip.tls_cert", "tls_cert and tls_key go together"));
        }
        if self.answerer.faults.expired_certificate && protocol != Protocol::Tls {
            return Err(invalid(
                "answerer.faults.expired_certificate",
                "needs sip.transport = \"tls\"",
            ));
        }
        for (key, v) in [
            ("sip.auth", &self.sip.auth),
            ("sip.challenge", &self.sip.challenge),
        ] {
            if v.as_deref().is_some_and(|v| !v.contains(':')) {
                return Err(invalid(key, "is name:password"));
            }
        }
        Scenario::suites("security.suites", &self.security.suites)?;
        Scenario::suites("security.answerer_suites", &self.security.answerer_suites)?;
        self.security(KeyMethod::Sdes, false)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_scenario_is_the_defaults_and_the_demo_is_valid() {
        let s = Scenario::parse("").unwrap();
        assert_eq!(s.role, Role::Both);
        assert_eq!(s.load.calls, 100);
        Scenario::demo().check().unwrap();
    }

    #[test]
    fn bad_scenarios_name_the_key() {
        for (text, key) in [
            ("[load]\nrate = 0", "load.rate"),
            ("[load]\nratee = 1", "ratee"),
            ("role = \"caller\"", "sip.target"),
            ("[sip]\ntransport = \"sctp\"", "sip.transport"),
            ("[security]\nsuites = [\"AES_CM_999\"]", "security.suites"),
            ("[security]\ncodecs = [\"amr\"]", "security.codecs"),
            ("[security]\nmethod = \"zrtp\"", "method"),
            (
                "[engine]\nport_min = 30000\nport_max = 20000",
                "engine.port_min",
            ),
            (
                "[answerer.faults]\nexpired_certificate = true",
                "expired_certificate",
            ),
            ("[sip]\ncaller_listen = \"nowhere\"", "caller_listen"),
        ] {
            let e = Scenario::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_example_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 5, "{n} example scenarios");
    }
}
