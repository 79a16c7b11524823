//! The fleet file of `srtp-control register` (`configs/register/failover.toml` shows every
//! key): what it holds, its checks, and the shared [`Policy`] and identities it gives.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::address::{RegistrarAddress, outbound_proxy};
use super::endpoint::{Detection, Identity, Policy};
use crate::config_file::{ConfigError as ScenarioError, invalid, read_text};
use crate::sip::transaction::TimerValues;
use crate::sip::transport::Protocol;

/// A fleet file. Every key has a default except the registrars.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Signaling.
    pub sip: SipSection,
    /// Registrars in order of preference.
    pub registrars: Vec<RegistrarSection>,
    /// Who registers.
    pub endpoints: EndpointsSection,
    /// Lifetimes and refresh.
    pub registration: RegistrationSection,
    /// Keepalives.
    pub keepalive: KeepaliveSection,
    /// Failure detection and failover.
    pub failover: FailoverSection,
    /// How long, and where the report goes.
    pub run: RunSection,
    /// Pass/fail: the exit code is 1 when one fails.
    pub thresholds: RegisterThresholds,
}

/// `[thresholds]`: what must hold for exit code 0. Unset limits are not judged.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegisterThresholds {
    /// Endpoints registered when the run ends, percent.
    pub registered_at_end_percent: f64,
    /// Failovers at most.
    pub max_failovers: Option<u64>,
    /// Every loss detected within the detection budget printed at the start.
    pub detection_within_budget: bool,
    /// Every failover (outage seen to registered on the next registrar) within this, ms.
    pub max_failover_ms: Option<u64>,
    /// Every fallback (the registrar back to registered there again) within this, ms.
    pub max_fallback_ms: Option<u64>,
    /// Connection, TLS and authentication errors at most.
    pub max_errors: Option<u64>,
}

impl Default for RegisterThresholds {
    fn default() -> Self {
        RegisterThresholds {
            registered_at_end_percent: 100.0,
            max_failovers: None,
            detection_within_budget: true,
            max_failover_ms: None,
            max_fallback_ms: None,
            max_errors: None,
        }
    }
}

/// `[sip]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// Our address (port 0: any).
    pub listen: SocketAddr,
    /// T1, ms (retransmissions start at T1 and give up after 64*T1).
    pub t1_ms: u64,
    /// TLS server verification: `system`, `skip` or a CA file.
    pub tls_verify: String,
    /// Send every request through this proxy (`host:port`), whatever the registrar.
    pub outbound_proxy: Option<String>,
    /// UDP: a socket (a source port) per endpoint instead of one for the fleet.
    pub port_per_endpoint: bool,
}

/// One `[[registrars]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarSection {
    /// A name for the report (default: `registrar<N>`).
    #[serde(default)]
    pub name: String,
    /// `host:port` (a name, an IPv4 address, or an IPv6 address in brackets).
    pub address: String,
    /// The domain of the address of record, `host` or `host:port` (default: the host).
    #[serde(default)]
    pub domain: Option<String>,
    /// The Request-URI of REGISTER and of OPTIONS probes and keepalives (default:
    /// `sip:<host>:<port>`, the registrar itself).
    #[serde(default)]
    pub request_uri: Option<String>,
    /// The name its TLS certificate must carry (default: the host).
    #[serde(default)]
    pub tls_name: Option<String>,
}

/// `[endpoints]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointsSection {
    /// How many endpoints (ignored with `csv`).
    pub count: usize,
    /// User pattern: `{n}` is the endpoint number from `first`, zero-padded to `width`.
    pub user: String,
    /// Password pattern (empty: no credentials).
    pub password: String,
    /// First number.
    pub first: u64,
    /// Digits of `{n}`.
    pub width: usize,
    /// A CSV file of `user,password` lines instead of the patterns.
    pub csv: Option<PathBuf>,
    /// New registrations per second at start.
    pub rate: f64,
}

/// `[registration]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationSection {
    /// Requested lifetime, seconds.
    pub expires: u32,
    /// Refresh this many seconds before the granted lifetime ends.
    pub refresh_before_s: f64,
    /// Spread refreshes evenly over the refresh interval.
    pub spread_refreshes: bool,
    /// RFC 5626: Contacts carry `+sip.instance` (a URN per endpoint) and `reg-id`.
    pub instance_id: bool,
}

/// `[keepalive]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveSection {
    /// CRLF ping interval on TCP/TLS, seconds (0: off).
    pub crlf_s: f64,
    /// OPTIONS ping interval, seconds (0: off).
    pub options_s: f64,
    /// STUN keepalive interval over UDP, seconds (RFC 5626 4.4.2; 0: off).
    pub stun_s: f64,
    /// How long a ping may wait for its answer, seconds.
    pub timeout_s: f64,
}

/// `[failover]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverSection {
    /// `fast` or `tolerant`.
    pub detection: Detection,
    /// Consecutive failures that declare a registrar lost.
    pub failures: u32,
    /// While on a backup, probe the higher-priority registrars this often, seconds.
    pub probe_interval_s: f64,
    /// After every registrar failed, wait this long, seconds.
    pub retry_after_s: f64,
}

/// `[run]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// How long to keep the fleet registered, seconds (0: until interrupted).
    pub duration_s: f64,
    /// Where `report.json` goes.
    pub report_dir: PathBuf,
    /// Serve Prometheus metrics here while running (empty: off).
    pub metrics: Option<SocketAddr>,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            transport: "udp".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            t1_ms: 500,
            tls_verify: "system".into(),
            outbound_proxy: None,
            port_per_endpoint: false,
        }
    }
}

impl Default for EndpointsSection {
    fn default() -> Self {
        EndpointsSection {
            count: 100,
            user: "phone{n}".into(),
            password: String::new(),
            first: 1,
            width: 5,
            csv: None,
            rate: 50.0,
        }
    }
}

impl Default for RegistrationSection {
    fn default() -> Self {
        RegistrationSection {
            expires: 3600,
            refresh_before_s: 5.0,
            spread_refreshes: true,
            instance_id: false,
        }
    }
}

impl Default for KeepaliveSection {
    fn default() -> Self {
        KeepaliveSection {
            crlf_s: 0.0,
            options_s: 0.0,
            stun_s: 0.0,
            timeout_s: 10.0,
        }
    }
}

impl Default for FailoverSection {
    fn default() -> Self {
        FailoverSection {
            detection: Detection::Fast,
            failures: 2,
            probe_interval_s: 30.0,
            retry_after_s: 30.0,
        }
    }
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            duration_s: 60.0,
            report_dir: "srtp-control-register".into(),
            metrics: None,
        }
    }
}

pub(crate) fn secs(key: &'static str, v: f64) -> Result<Option<Duration>, ScenarioError> {
    if !v.is_finite() || !(0.0..=1e7).contains(&v) {
        return Err(invalid(key, format!("{v} is not a number of seconds")));
    }
    Ok((v > 0.0).then(|| Duration::from_secs_f64(v)))
}

impl FleetConfig {
    /// Reads and checks a fleet file.
    pub fn load(path: &Path) -> Result<FleetConfig, ScenarioError> {
        FleetConfig::parse(&read_text(path)?)
    }

    /// Parses and checks fleet text.
    pub fn parse(text: &str) -> Result<FleetConfig, ScenarioError> {
        let c: FleetConfig =
            toml::from_str(text).map_err(|e| ScenarioError::Toml(e.to_string()))?;
        c.policy(c.sip.listen)?;
        if c.endpoints.csv.is_none() {
            c.identities()?;
        }
        Ok(c)
    }

    /// The shared policy, with `local` as our address.
    pub fn policy(&self, local: SocketAddr) -> Result<Policy, ScenarioError> {
        let protocol = Protocol::parse(&self.sip.transport)
            .ok_or_else(|| invalid("sip.transport", "must be udp, tcp or tls"))?;
        if self.registrars.is_empty() {
            return Err(invalid(
                "registrars",
                "name at least one [[registrars]] with an address",
            ));
        }
        if !(1..=60_000).contains(&self.sip.t1_ms) {
            return Err(invalid("sip.t1_ms", "must be 1 to 60000"));
        }
        let registrars = self
            .registrars
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let name = if r.name.is_empty() {
                    format!("registrar{i}")
                } else {
                    r.name.clone()
                };
                RegistrarAddress {
                    name: &name,
                    address: &r.address,
                    domain: r.domain.as_deref(),
                    request_uri: r.request_uri.as_deref(),
                    tls_name: r.tls_name.as_deref(),
                }
                .spec(protocol)
                .map_err(|e| invalid("registrars", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut p = Policy::new(registrars, protocol, local);
        p.outbound = self
            .sip
            .outbound_proxy
            .as_deref()
            .map(|o| outbound_proxy(o, protocol))
            .transpose()
            .map_err(|e| invalid("sip.outbound_proxy", e))?;
        p.expires = self.registration.expires;
        if p.expires == 0 {
            return Err(invalid("registration.expires", "must be above 0"));
        }
        p.refresh_before = secs(
            "registration.refresh_before_s",
            self.registration.refresh_before_s,
        )?
        .unwrap_or_default();
        p.spread_refreshes = self.registration.spread_refreshes;
        p.instance_id = self.registration.instance_id;
        p.timers = TimerValues {
            t1: Duration::from_millis(self.sip.t1_ms),
            ..TimerValues::default()
        };
        if self.sip.port_per_endpoint && protocol.reliable() {
            return Err(invalid(
                "sip.port_per_endpoint",
                "is for udp: over tcp and tls every endpoint has connections of its own",
            ));
        }
        p.crlf_keepalive = secs("keepalive.crlf_s", self.keepalive.crlf_s)?;
        if p.crlf_keepalive.is_some() && !protocol.reliable() {
            return Err(invalid(
                "keepalive.crlf_s",
                "CRLF keepalives need tcp or tls; use keepalive.options_s over udp",
            ));
        }
        p.options_keepalive = secs("keepalive.options_s", self.keepalive.options_s)?;
        p.stun_keepalive = secs("keepalive.stun_s", self.keepalive.stun_s)?;
        if p.stun_keepalive.is_some() && protocol.reliable() {
            return Err(invalid(
                "keepalive.stun_s",
                "STUN keepalives are for udp; use keepalive.crlf_s over tcp and tls",
            ));
        }
        p.keepalive_timeout = secs("keepalive.timeout_s", self.keepalive.timeout_s)?
            .ok_or_else(|| invalid("keepalive.timeout_s", "must be above 0"))?;
        p.detection = self.failover.detection;
        p.failures = self.failover.failures;
        if p.failures == 0 {
            return Err(invalid("failover.failures", "must be at least 1"));
        }
        p.probe_interval = secs("failover.probe_interval_s", self.failover.probe_interval_s)?
            .ok_or_else(|| invalid("failover.probe_interval_s", "must be above 0"))?;
        p.retry_after = secs("failover.retry_after_s", self.failover.retry_after_s)?
            .ok_or_else(|| invalid("failover.retry_after_s", "must be above 0"))?;
        secs("run.duration_s", self.run.duration_s)?;
        let pct = self.thresholds.registered_at_end_percent;
        if !(0.0..=100.0).contains(&pct) {
            return Err(invalid(
                "thresholds.registered_at_end_percent",
                "must be 0 to 100",
            ));
        }
        if !(self.endpoints.rate.is_finite() && self.endpoints.rate > 0.0) {
            return Err(invalid("endpoints.rate", "must be above 0"));
        }
        Ok(p)
    }

    /// The endpoints, from the CSV file or the patterns.
    pub fn identities(&self) -> Result<Vec<Identity>, ScenarioError> {
        let e = &self.endpoints;
        let mut out = Vec::new();
        if let Some(path) = &e.csv {
            let text = Zeroizing::new(read_text(path)?);
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut f = line.split(',').map(str::trim);
                let user = f.next().unwrap_or_default();
                if user.is_empty() || user.contains(|c: char| c.is_whitespace() || c == '@') {
                    return Err(invalid(
                        "endpoints.csv",
                        format!("line {}: not a user name", n + 1),
                    ));
                }
                let auth = f
                    .next()
                    .filter(|p| !p.is_empty())
                    .map(|p| (user.to_owned(), Zeroizing::new(p.to_owned())));
                out.push(Identity {
                    user: user.to_owned(),
                    auth,
                });
            }
            if out.is_empty() {
                return Err(invalid("endpoints.csv", "no endpoint in the file"));
            }
            return Ok(out);
        }
        if e.count == 0 || e.count > 1_000_000 {
            return Err(invalid("endpoints.count", "must be 1 to 1000000"));
        }
        if !e.user.contains("{n}") && e.count > 1 {
            return Err(invalid(
                "endpoints.user",
                "needs {n} so that each endpoint has its own user",
            ));
        }
        for i in 0..e.count as u64 {
            let n = format!("{:0w$}", e.first + i, w = e.width.min(20));
            let user = e.user.replace("{n}", &n);
            let auth = (!e.password.is_empty())
                .then(|| (user.clone(), Zeroizing::new(e.password.replace("{n}", &n))));
            out.push(Identity { user, auth });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fleet_files_name_the_key() {
        let base = "[[registrars]]\naddress = \"127.0.0.1:5060\"\n";
        assert!(FleetConfig::parse(base).is_ok());
        for (text, key) in [
            ("", "registrars"),
            ("[sip]\ntransport = \"sctp\"\n", "sip.transport"),
            ("[keepalive]\ncrlf_s = 30\n", "keepalive.crlf_s"),
            ("[failover]\nfailures = 0\n", "failover.failures"),
            ("[endpoints]\nuser = \"alice\"\n", "endpoints.user"),
            ("[endpoints]\nrate = -1\n", "endpoints.rate"),
            (
                "[registration]\nrefresh_before_s = -5\n",
                "registration.refresh_before_s",
            ),
        ] {
            let t = if key == "registrars" {
                text.to_owned()
            } else {
                format!("{base}{text}")
            };
            let e = FleetConfig::parse(&t).unwrap_err().to_string();
            assert!(e.contains(key), "{t:?}: {e}");
        }
        let e = FleetConfig::parse(&format!("{base}[failover]\nbogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn patterns_number_users_and_passwords() {
        let c = FleetConfig::parse(
            "[[registrars]]\naddress = \"127.0.0.1:5060\"\n[endpoints]\ncount = 3\nuser = \"ep{n}\"\npassword = \"pw-{n}\"\nfirst = 9\nwidth = 3\n",
        )
        .unwrap();
        let ids = c.identities().unwrap();
        let users: Vec<_> = ids.iter().map(|i| i.user.as_str()).collect();
        assert_eq!(users, ["ep009", "ep010", "ep011"]);
        assert_eq!(ids[2].auth.as_ref().unwrap().1.as_str(), "pw-011");
    }

    #[test]
    fn a_csv_gives_users_and_passwords_and_bad_lines_are_named() {
        let dir = std::env::temp_dir().join(format!("srtp-fleet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.csv");
        std::fs::write(&good, "# user,password\nalice,pa\n\nbob\n").unwrap();
        let bad = dir.join("bad.csv");
        std::fs::write(&bad, "alice,pa\nbad user,x\n").unwrap();
        let cfg = |p: &Path| {
            FleetConfig::parse(&format!(
                "[[registrars]]\naddress = \"127.0.0.1:5060\"\n[endpoints]\ncsv = {:?}\n",
                p.display().to_string()
            ))
            .unwrap()
        };
        let ids = cfg(&good).identities().unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0].auth.as_ref().unwrap().1.as_str(), "pa");
        assert!(ids[1].auth.is_none());
        let e = cfg(&bad).identities().unwrap_err().to_string();
        assert!(e.contains("endpoints.csv") && e.contains("line 2"), "{e}");
        assert!(!e.contains("pa"), "no password in the error");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_example_fleet_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/register/failover.toml"
        );
        let c = FleetConfig::load(Path::new(path)).unwrap();
        let p = c.policy(c.sip.listen).unwrap();
        assert_eq!(p.registrars.len(), 2);
        assert_eq!(c.identities().unwrap().len(), 5000);
        assert_eq!(p.detection_budget(), Some(Duration::from_secs(28)));
    }
}
