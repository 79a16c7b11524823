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

/// Checks that `dir` is a directory only its owner (us) can write to: a key written where
/// others can write could be read, swapped or redirected through a symlink planted there.
pub fn check_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir)?;
    let refuse = |why: String| {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            why,
        ))
    };
    if !m.is_dir() {
        return refuse(format!(
            "{} is not a directory (or is a symlink)",
            dir.display()
        ));
    }
    let me = effective_uid();
    if m.uid() != me {
        return refuse(format!(
            "{} belongs to uid {}, not to us (uid {me}): choose a directory of your own",
            dir.display(),
            m.uid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return refuse(format!(
            "{} is writable by others (mode {:o}): keys go in a private directory (mkdir -m 700)",
            dir.display(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Our effective uid, read from `/proc/self` (owned by it) rather than by an unsafe call.
fn effective_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    })
}

/// Writes `path` with `mode` without following or trusting what is there: the bytes go to a
/// new file (created exclusively, never through a symlink) in the same directory, which is
/// then renamed over `path` (a symlink or a file of another mode at `path` is replaced, not
/// written through).
pub fn write_exclusive(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut nonce = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| std::io::Error::other("no randomness for a temporary name"))?;
    let tmp = dir.join(format!(
        ".{name}.{}.tmp",
        nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Writes `<dir>/<name>.crt` (0644) and `<dir>/<name>.key` (0600), each by
/// [`write_exclusive`], into a directory [`check_private_dir`] accepts.
pub fn write_pair(
    dir: &Path,
    name: &str,
    cert: &str,
    key: &str,
) -> std::io::Result<(PathBuf, PathBuf)> {
    check_private_dir(dir)?;
    let c = dir.join(format!("{name}.crt"));
    let k = dir.join(format!("{name}.key"));
    write_exclusive(&c, cert.as_bytes(), 0o644)?;
    write_exclusive(&k, key.as_bytes(), 0o600)?;
    Ok((c, k))
}
