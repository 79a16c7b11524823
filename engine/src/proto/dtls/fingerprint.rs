//! Certificate fingerprints (RFC 8122 5) and the DTLS role (RFC 4145 4, RFC 5763 5): what
//! signaling carries about a handshake.

use std::fmt;

use ring::digest;
use subtle::ConstantTimeEq;

/// Which side of the handshake we are (SDP `a=setup`, RFC 4145 4 and RFC 5763 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DtlsRole {
    /// Sends the ClientHello (`a=setup:active`).
    Client,
    /// Waits for it (`a=setup:passive`).
    Server,
}

impl DtlsRole {
    /// `client` or `server`.
    pub fn name(self) -> &'static str {
        match self {
            DtlsRole::Client => "client",
            DtlsRole::Server => "server",
        }
    }
}

/// A hash function of a certificate fingerprint (RFC 8122 5, the IANA "Hash Function Textual
/// Names" registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    /// `sha-1` (still seen in older SDP).
    Sha1,
    /// `sha-256` (what WebRTC and most SBCs send).
    Sha256,
    /// `sha-384`.
    Sha384,
    /// `sha-512`.
    Sha512,
}

impl HashAlg {
    /// Every supported hash, in SDP preference order.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
        HashAlg::Sha1,
    ];

    /// The SDP token (`sha-256`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha-1",
            HashAlg::Sha256 => "sha-256",
            HashAlg::Sha384 => "sha-384",
            HashAlg::Sha512 => "sha-512",
        }
    }

    /// Looks a hash up by its SDP token, in any case.
    pub fn from_name(s: &str) -> Option<HashAlg> {
        HashAlg::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(s))
    }

    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        self.algorithm().output_len()
    }
}

/// Why a fingerprint string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// Not `<hash> <hex pairs>`.
    #[error("expected \"<hash> <AB:CD:...>\", e.g. \"sha-256 AB:CD:...\"")]
    Shape,
    /// The hash is not one of sha-1, sha-256, sha-384, sha-512.
    #[error("unsupported hash (sha-1, sha-256, sha-384 or sha-512)")]
    UnknownHash,
    /// A byte is not two hex digits, or the pairs are not colon-separated.
    #[error("the value must be colon-separated pairs of hex digits")]
    BadHex,
    /// The value has the wrong length for its hash.
    #[error("{alg} needs {expected} bytes, got {actual}")]
    Length {
        /// The hash named.
        alg: &'static str,
        /// Its digest length.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
}

/// A certificate fingerprint as SDP carries it (`a=fingerprint:sha-256 AB:CD:...`).
#[derive(Clone, PartialEq, Eq)]
pub struct Fingerprint {
    alg: HashAlg,
    value: Vec<u8>,
}

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(alg: HashAlg, der: &[u8]) -> Fingerprint {
        Fingerprint {
            alg,
            value: digest::digest(alg.algorithm(), der).as_ref().to_vec(),
        }
    }

    /// Parses `sha-256 AB:CD:...` (hash token in any case, hex in any case).
    pub fn parse(s: &str) -> Result<Fingerprint, FingerprintError> {
        let mut parts = s.split_ascii_whitespace();
        let (Some(alg), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(FingerprintError::Shape);
        };
        let alg = HashAlg::from_name(alg).ok_or(FingerprintError::UnknownHash)?;
        let mut value = Vec::with_capacity(alg.digest_len());
        for pair in hex.split(':') {
            let b = pair.as_bytes();
            if b.len() != 2 {
                return Err(FingerprintError::BadHex);
            }
            let digit = |c: u8| (c as char).to_digit(16).ok_or(FingerprintError::BadHex);
            value.push((digit(b[0])? * 16 + digit(b[1])?) as u8);
        }
        if value.len() != alg.digest_len() {
            return Err(FingerprintError::Length {
                alg: alg.name(),
                expected: alg.digest_len(),
                actual: value.len(),
            });
        }
        Ok(Fingerprint { alg, value })
    }

    /// The hash it uses.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// Whether `der` is the certificate this fingerprint names (constant time in the value).
    pub fn matches(&self, der: &[u8]) -> bool {
        let d = digest::digest(self.alg.algorithm(), der);
        bool::from(d.as_ref().ct_eq(&self.value))
    }
}

impl fmt::Display for Fingerprint {
    /// `sha-256 AB:CD:...`, as in SDP.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alg.name())?;
        for (i, b) in self.value.iter().enumerate() {
            write!(f, "{}{b:02X}", if i == 0 { ' ' } else { ':' })?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}
