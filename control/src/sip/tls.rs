//! TLS for SIP (rustls): verification modes, mutual TLS, and one clear message per failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, SignatureScheme};
use thiserror::Error;

/// How a TLS client checks the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "path")]
pub enum Verify {
    /// The platform's trust store (rustls-native-certs).
    System,
    /// Only this CA file (PEM, one or more certificates).
    CaFile(PathBuf),
    /// No verification at all: loudly logged as unsafe at every connection.
    Skip,
}

impl Verify {
    /// From a config value: `system`, `skip`, or the path of a CA file.
    pub fn from_setting(s: &str) -> Verify {
        match s {
            "system" => Verify::System,
            "skip" => Verify::Skip,
            path => Verify::CaFile(path.into()),
        }
    }
}

/// TLS settings of one endpoint.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// Server-certificate verification when we connect.
    pub verify: Verify,
    /// Our certificate chain and key (PEM files): presented as a server, and as a client
    /// for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// As a server, require client certificates signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            verify: Verify::System,
            identity: None,
            client_ca: None,
        }
    }
}

/// Why a TLS connection failed, each in its own words.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TlsFailure {
    /// The server's certificate is past its notAfter.
    #[error("TLS: the server certificate has expired{}", .not_after.map(|t| format!(" (not valid after {})", crate::sip::log::utc(t))).unwrap_or_default())]
    Expired {
        /// notAfter, in Unix seconds, when known.
        not_after: Option<u64>,
    },
    /// The server's certificate is not yet valid.
    #[error("TLS: the server certificate is not valid yet")]
    NotYetValid,
    /// Not signed by an authority we trust.
    #[error("TLS: the server certificate is signed by an unknown authority (not in {trust})")]
    UnknownAuthority {
        /// The trust store used.
        trust: String,
    },
    /// Valid for other names.
    #[error("TLS: the server certificate is for {presented}, not for {expected}")]
    WrongName {
        /// The name we asked for.
        expected: String,
        /// The names in the certificate.
        presented: String,
    },
    /// The server refused our client certificate (or wanted one and got none).
    #[error("TLS: the server rejected our client certificate ({alert}){}", if *.sent_certificate { "" } else { "; no client certificate is configured" })]
    ClientCertificateRejected {
        /// The alert received.
        alert: String,
        /// Whether we had presented one.
        sent_certificate: bool,
    },
    /// The peer closed the connection right after the handshake (often a client
    /// certificate it did not like, with TLS 1.3 where that comes after our Finished).
    #[error("TLS: the peer closed the connection right after the handshake")]
    ClosedAfterHandshake,
    /// As a server: the client presented no certificate or one we do not trust.
    #[error("TLS: the client certificate was refused: {0}")]
    ClientCertificateRefused(String),
    /// Any other TLS error.
    #[error("TLS: {0}")]
    Other(String),
}

impl TlsFailure {
    /// A short stable name for reports.
    pub fn cause(&self) -> &'static str {
        match self {
            TlsFailure::Expired { .. } => "tls_expired",
            TlsFailure::NotYetValid => "tls_not_yet_valid",
            TlsFailure::UnknownAuthority { .. } => "tls_unknown_ca",
            TlsFailure::WrongName { .. } => "tls_name_mismatch",
            TlsFailure::ClientCertificateRejected { .. } => "tls_client_cert_rejected",
            TlsFailure::ClosedAfterHandshake => "tls_closed_after_handshake",
            TlsFailure::ClientCertificateRefused(_) => "tls_client_cert_refused",
            TlsFailure::Other(_) => "tls_other",
        }
    }

    /// Classifies a rustls error (as a client, `sent_certificate` says whether we presented
    /// one; `trust` names the trust store for the unknown-authority message).
    pub fn classify(e: &rustls::Error, sent_certificate: bool, trust: &str) -> TlsFailure {
        use rustls::Error as E;
        match e {
            E::InvalidCertificate(c) => match c {
                CertificateError::Expired => TlsFailure::Expired { not_after: None },
                CertificateError::ExpiredContext { not_after, .. } => TlsFailure::Expired {
                    not_after: Some(not_after.as_secs()),
                },
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsFailure::NotYetValid
                }
                // A bad signature under a trusted name is a different authority of the same
                // name: still not one we trust.
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    TlsFailure::UnknownAuthority {
                        trust: trust.to_owned(),
                    }
                }
                CertificateError::NotValidForName => TlsFailure::WrongName {
                    expected: "the name we asked for".into(),
                    presented: "other names".into(),
                },
                CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                } => TlsFailure::WrongName {
                    expected: server_name_text(expected),
                    presented: if presented.is_empty() {
                        "no names".into()
                    } else {
                        // rustls gives `DnsName("a.example")`; people want `a.example`.
                        presented
                            .iter()
                            .map(|p| p.split('"').nth(1).unwrap_or(p))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                },
                other => TlsFailure::Other(format!("invalid certificate: {other:?}")),
            },
            E::AlertReceived(a) => match a {
                AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateExpired
                | AlertDescription::AccessDenied
                | AlertDescription::HandshakeFailure
                    if matches!(a, AlertDescription::CertificateRequired) || sent_certificate =>
                {
                    TlsFailure::ClientCertificateRejected {
                        alert: alert_text(*a),
                        sent_certificate,
                    }
                }
                other => TlsFailure::Other(format!("the peer sent alert {}", alert_text(*other))),
            },
            E::NoCertificatesPresented => {
                TlsFailure::ClientCertificateRefused("none presented".into())
            }
            other => TlsFailure::Other(other.to_string()),
        }
    }

    /// Classifies an I/O error from a TLS stream (rustls errors travel inside).
    pub fn from_io(e: &std::io::Error, sent_certificate: bool, trust: &str) -> TlsFailure {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(r) => TlsFailure::classify(r, sent_certificate, trust),
            None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                TlsFailure::ClosedAfterHandshake
            }
            None => TlsFailure::Other(e.to_string()),
        }
    }
}

fn server_name_text(n: &ServerName<'_>) -> String {
    match n {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => format!("{n:?}"),
    }
}

fn alert_text(a: AlertDescription) -> String {
    let s = format!("{a:?}");
    // CamelCase to snake_case, the RFC 8446 spelling.
    let mut out = String::with_capacity(s.len() + 4);
    let mut prev_lower = false;
    for c in s.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase();
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Why TLS settings cannot be loaded (local misuse, not the peer's fault).
#[derive(Debug, Error)]
pub enum TlsConfigError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let err = |reason: String| TlsConfigError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    // The error names the file only: never any key bytes.
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsConfigError::Pem {
        path: path.display().to_string(),
        reason: format!("no usable private key ({e})"),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The client configuration for these settings and a name for the trust store in messages.
pub fn client_config(
    s: &TlsSettings,
) -> Result<(Arc<rustls::ClientConfig>, String), TlsConfigError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let (builder, trust) = match &s.verify {
        Verify::Skip => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider()))),
            "nothing (verification skipped)".to_owned(),
        ),
        Verify::System => {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            (
                builder.with_root_certificates(roots),
                "the system trust store".to_owned(),
            )
        }
        Verify::CaFile(p) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(p)? {
                roots
                    .add(c)
                    .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
            }
            (
                builder.with_root_certificates(roots),
                format!("CA file {}", p.display()),
            )
        }
    };
    let config = match &s.identity {
        Some((c, k)) => builder
            .with_client_auth_cert(certs(c)?, key(k)?)
            .map_err(|e| TlsConfigError::Rustls(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    Ok((Arc::new(config), trust))
}

/// The server configuration: our identity (required) and, for mutual TLS, the client CA.
pub fn server_config(s: &TlsSettings) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let (c, k) = s.identity.as_ref().ok_or_else(|| {
        TlsConfigError::Rustls("a TLS listener needs a certificate and key".into())
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let builder = match &s.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let cfg = builder
        .with_single_cert(certs(c)?, key(k)?)
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate (verification mode `skip`). Signatures are still checked,
/// so the handshake itself is sound; only the identity is not.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_are_rfc_spelling() {
        assert_eq!(
            alert_text(AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(alert_text(AlertDescription::UnknownCA), "unknown_ca");
    }
}
