//! The engine's DTLS certificate and key.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::{Zeroize, Zeroizing};

use super::{DtlsContext, DtlsOptions, DtlsRole, Fingerprint, HashAlg, run_in_memory};

/// Why the engine's certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Generating the ECDSA P-256 key or certificate failed.
    #[error("generating the DTLS certificate failed")]
    Generate,
    /// A PEM file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM CERTIFICATE block")]
    NoCertificate(String),
    /// The key is not an ECDSA P-256 or P-384 key in PKCS#8 or SEC1 PEM, or does not belong to
    /// the certificate. (The key's bytes never appear in this message.)
    #[error("{0}: not an ECDSA P-256/P-384 private key (PKCS#8 or SEC1 PEM) for this certificate")]
    BadKey(String),
}

/// The engine's DTLS certificate and key, with its fingerprints. The private key is zeroized on
/// drop and never printed.
pub struct DtlsIdentity {
    pub(super) cert: dimpl::DtlsCertificate,
    fingerprint: Fingerprint,
}

impl DtlsIdentity {
    /// A fresh self-signed ECDSA P-256 certificate (RFC 5763 5: self-signed is the norm; the
    /// fingerprint in SDP is what authenticates it).
    pub fn generate() -> Result<DtlsIdentity, IdentityError> {
        let cert = dimpl::certificate::generate_self_signed_certificate()
            .map_err(|_| IdentityError::Generate)?;
        Ok(DtlsIdentity::from_der(cert))
    }

    /// A certificate and key from PEM files (the key as PKCS#8 `PRIVATE KEY` or SEC1
    /// `EC PRIVATE KEY`). The key is checked by signing with it once.
    pub fn from_pem_files(cert_path: &str, key_path: &str) -> Result<DtlsIdentity, IdentityError> {
        use rustls_pki_types::pem::PemObject;
        let read = |p: &str| {
            std::fs::read(p).map_err(|source| IdentityError::Read {
                path: p.to_string(),
                source,
            })
        };
        let cert_pem = read(cert_path)?;
        let key_pem = Zeroizing::new(read(key_path)?);
        let cert = rustls_pki_types::CertificateDer::from_pem_slice(&cert_pem)
            .map_err(|_| IdentityError::NoCertificate(cert_path.to_string()))?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| IdentityError::BadKey(key_path.to_string()))?;
        let identity = DtlsIdentity::from_der(dimpl::DtlsCertificate {
            certificate: cert.to_vec(),
            private_key: key.secret_der().to_vec(),
        });
        identity
            .self_check()
            .map_err(|()| IdentityError::BadKey(key_path.to_string()))?;
        Ok(identity)
    }

    fn from_der(cert: dimpl::DtlsCertificate) -> DtlsIdentity {
        let fingerprint = Fingerprint::of(HashAlg::Sha256, &cert.certificate);
        DtlsIdentity { cert, fingerprint }
    }

    /// Runs one in-memory handshake against itself: proves the key signs for the certificate.
    fn self_check(&self) -> Result<(), ()> {
        let ctx = DtlsContext::new(Arc::new(DtlsIdentity::from_der(self.cert.clone())), {
            DtlsOptions {
                retransmit_initial: Duration::from_millis(50),
                ..DtlsOptions::default()
            }
        })
        .map_err(|_| ())?;
        let fp = self.fingerprint.clone();
        let now = Instant::now();
        let mut c = ctx.session(DtlsRole::Client, fp.clone(), now);
        let mut s = ctx.session(DtlsRole::Server, fp, now);
        let r = run_in_memory(&mut *c, &mut *s, now, 64);
        if r.is_ok() { Ok(()) } else { Err(()) }
    }

    /// The certificate's sha-256 fingerprint, as SDP carries it.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The certificate's fingerprint with another hash.
    pub fn fingerprint_with(&self, alg: HashAlg) -> Fingerprint {
        Fingerprint::of(alg, &self.cert.certificate)
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert.certificate
    }
}

impl Drop for DtlsIdentity {
    fn drop(&mut self) {
        self.cert.private_key.zeroize();
    }
}

impl fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}
