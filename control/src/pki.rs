//! A small lab PKI: a CA and the certificates a TLS test bed needs (valid, expired, for the
//! wrong name, client certificates for mutual TLS), written as PEM files.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// What a certificate is for and when it is valid.
#[derive(Clone, Debug)]
pub struct CertSpec<'a> {
    /// Subject alternative names (DNS names or IP addresses).
    pub names: &'a [&'a str],
    /// A client certificate (for mutual TLS) rather than a server one.
    pub client: bool,
    /// Already expired (valid only in the past).
    pub expired: bool,
}

/// A lab certificate authority.
pub struct LabCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for LabCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LabCa")
    }
}

fn this_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32
}

impl LabCa {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> Result<LabCa, rcgen::Error> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let y = this_year();
        p.not_before = rcgen::date_time_ymd(y - 1, 1, 1);
        p.not_after = rcgen::date_time_ymd(y + 10, 1, 1);
        let key = KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        Ok(LabCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate: (certificate PEM, private key PEM).
    pub fn issue(&self, spec: &CertSpec<'_>) -> Result<(String, String), rcgen::Error> {
        let mut p = CertificateParams::new(
            spec.names
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )?;
        p.distinguished_name.push(
            DnType::CommonName,
            spec.names.first().copied().unwrap_or("lab"),
        );
        p.extended_key_usages = vec![if spec.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let y = this_year();
        if spec.expired {
            p.not_before = rcgen::date_time_ymd(y - 3, 1, 1);
            p.not_after = rcgen::date_time_ymd(y - 2, 1, 1);
        } else {
            p.not_before = rcgen::date_time_ymd(y - 1, 1, 1);
            p.not_after = rcgen::date_time_ymd(y + 5, 1, 1);
        }
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Writes `<dir>/<name>.crt` and `<dir>/<name>.key` (mode 0600 for the key).
pub fn write_pair(
    dir: &Path,
    name: &str,
    cert: &str,
    key: &str,
) -> std::io::Result<(PathBuf, PathBuf)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let c = dir.join(format!("{name}.crt"));
    let k = dir.join(format!("{name}.key"));
    std::fs::write(&c, cert)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&k)?;
    f.write_all(key.as_bytes())?;
    Ok((c, k))
}
