//! TLS material for a run: the scenario's certificates, or a lab CA made for the run when both
//! ends are here (removed when the run ends).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::config::{Role, Scenario};
use super::error::RunError;
use crate::sip::tls::{TlsSettings, Verify};
use crate::sip::transport::Protocol;

/// TLS material for a run on this machine: the scenario's, or a lab CA made for the run.
pub(super) struct RunTls {
    pub(super) caller: TlsSettings,
    pub(super) answerer: TlsSettings,
    _dir: Option<TempDir>,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn run_tls(s: &Scenario, protocol: Protocol) -> Result<RunTls, RunError> {
    let verify = Verify::from_setting(&s.sip.tls_verify);
    let mut caller = TlsSettings {
        verify,
        identity: s.sip.tls_cert.clone().zip(s.sip.tls_key.clone()),
        client_ca: None,
    };
    let mut answerer = TlsSettings {
        verify: caller.verify.clone(),
        identity: caller.identity.clone(),
        client_ca: s.sip.client_ca.clone(),
    };
    let lab = protocol == Protocol::Tls
        && s.role == Role::Both
        && (answerer.identity.is_none() || s.answerer.faults.expired_certificate);
    if !lab {
        return Ok(RunTls {
            caller,
            answerer,
            _dir: None,
        });
    }
    let io = |e: std::io::Error| RunError::Io(format!("lab certificates: {e}"));
    let dir = std::env::temp_dir().join(format!(
        "srtp-control-run-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let dir = TempDir(dir);
    let ca = crate::pki::LabCa::new("srtp-control run CA")
        .map_err(|e| RunError::Io(format!("lab CA: {e}")))?;
    let (cert, key) = ca
        .issue(&crate::pki::CertSpec {
            names: &["localhost", "127.0.0.1", "::1"],
            client: false,
            expired: s.answerer.faults.expired_certificate,
        })
        .map_err(|e| RunError::Io(format!("lab certificate: {e}")))?;
    let pair = crate::pki::write_pair(&dir.0, "server", &cert, &key).map_err(io)?;
    let ca_path = dir.0.join("ca.crt");
    std::fs::write(&ca_path, ca.cert_pem()).map_err(io)?;
    answerer.identity = Some(pair);
    if s.sip.tls_verify == "system" {
        caller.verify = Verify::CaFile(ca_path);
    }
    Ok(RunTls {
        caller,
        answerer,
        _dir: Some(dir),
    })
}
