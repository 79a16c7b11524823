//! SDES `a=crypto` attributes (RFC 4568, RFC 6188, RFC 7714):
//! `<tag> <suite> inline:<key||salt>[|<lifetime>][|<mki>:<length>][;inline:...] [params]`.
//!
//! Key material is zeroized on drop and never printed by `Debug`; only `to_attr` writes it,
//! for the SDP body itself.

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use srtp_engine::ctl::protocol::{KeyRequest, SdesRequest, Secret};
use srtp_engine::proto::srtp::Suite;
use thiserror::Error;
use zeroize::Zeroizing;

/// Why an `a=crypto` line cannot be used. The peer's fault; the line is skipped (and, if no
/// line is usable, the negotiation fails naming the first reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum CryptoAttrError {
    /// Not `<tag> <suite> <key-params>`.
    #[error("malformed a=crypto line")]
    Malformed,
    /// The tag is not a 1-9 digit number.
    #[error("a=crypto tag is not a number of at most 9 digits")]
    BadTag,
    /// A suite we do not implement.
    #[error("unknown crypto suite")]
    UnknownSuite,
    /// Key method other than `inline`.
    #[error("key method is not inline")]
    NotInline,
    /// The key is not base64 or has the wrong length for the suite (30, 46, 28 or 44 bytes).
    #[error("key||salt is not base64 of the suite's length")]
    BadKey,
    /// A lifetime is not a number or `2^n`.
    #[error("bad key lifetime")]
    BadLifetime,
    /// The MKI is not `<value>:<length>` with a length of 1-4 bytes (or its value does not fit).
    #[error("bad MKI (value:length, length 1-4 bytes)")]
    BadMki,
    /// A session parameter we cannot honour (`UNENCRYPTED_SRTP`, `UNAUTHENTICATED_SRTP`,
    /// `FEC_ORDER`, `FEC_KEY`, or an unknown one).
    #[error("unsupported session parameter")]
    UnsupportedParam,
    /// Several keys with different MKI lengths, or several keys without MKI.
    #[error("several keys need MKIs of one length")]
    MkiMismatch,
}

/// One master key with its optional lifetime and MKI.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyParam {
    /// key || salt.
    pub key_salt: Zeroizing<Vec<u8>>,
    /// Lifetime in packets.
    pub lifetime: Option<u64>,
    /// MKI value and length in bytes.
    pub mki: Option<(u32, u8)>,
}

impl fmt::Debug for KeyParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyParam")
            .field("key_salt", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .field("mki", &self.mki)
            .finish()
    }
}

/// One `a=crypto` attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoAttr {
    /// The tag, echoed in the answer.
    pub tag: u32,
    /// The suite.
    pub suite: Suite,
    /// How the suite is spelled on the line (the RFC name, or a vendor alias such as
    /// `AES_CM_256_HMAC_SHA1_80` that an answer echoes back).
    pub spelling: &'static str,
    /// One or more keys.
    pub keys: Vec<KeyParam>,
    /// `KDR=n`: key derivation rate 2^n.
    pub kdr: Option<u8>,
    /// `WSH=n`: window size hint for the replay list.
    pub wsh: Option<u32>,
    /// `UNENCRYPTED_SRTCP` was given (we keep SRTCP encrypted; RFC 4568 6.3.2 lets the answer
    /// drop it).
    pub unencrypted_srtcp: bool,
}

impl CryptoAttr {
    /// Parses the value of an `a=crypto` attribute.
    pub fn parse(v: &str) -> Result<CryptoAttr, CryptoAttrError> {
        let mut parts = v.split_ascii_whitespace();
        let (Some(tag), Some(suite), Some(keys)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoAttrError::Malformed);
        };
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoAttrError::BadTag);
        }
        let tag = tag.parse().map_err(|_| CryptoAttrError::BadTag)?;
        let (suite, spelling) =
            Suite::from_sdp_spelling(suite).ok_or(CryptoAttrError::UnknownSuite)?;
        let mut out = CryptoAttr {
            tag,
            suite,
            spelling,
            keys: Vec::new(),
            kdr: None,
            wsh: None,
            unencrypted_srtcp: false,
        };
        for k in keys.split(';') {
            out.keys.push(parse_key(suite, k)?);
        }
        if out.keys.len() > 1 {
            let len = out.keys[0].mki.map(|m| m.1);
            if len.is_none() || out.keys.iter().any(|k| k.mki.map(|m| m.1) != len) {
                return Err(CryptoAttrError::MkiMismatch);
            }
        }
        for p in parts {
            let (name, val) = p.split_once('=').unwrap_or((p, ""));
            match name.to_ascii_uppercase().as_str() {
                "KDR" => {
                    let n: u8 = val.parse().map_err(|_| CryptoAttrError::UnsupportedParam)?;
                    if n > 24 {
                        return Err(CryptoAttrError::UnsupportedParam);
                    }
                    out.kdr = Some(n);
                }
                "WSH" => {
                    out.wsh = Some(val.parse().map_err(|_| CryptoAttrError::UnsupportedParam)?)
                }
                "UNENCRYPTED_SRTCP" => out.unencrypted_srtcp = true,
                _ => return Err(CryptoAttrError::UnsupportedParam),
            }
        }
        Ok(out)
    }

    /// A fresh attribute with one random key of the suite's length.
    pub fn generate(
        tag: u32,
        suite: Suite,
        lifetime: Option<u64>,
        mki: Option<(u32, u8)>,
    ) -> CryptoAttr {
        CryptoAttr {
            tag,
            suite,
            spelling: suite.sdp_name(),
            keys: vec![KeyParam {
                key_salt: random_key(suite),
                lifetime,
                mki,
            }],
            kdr: None,
            wsh: None,
            unencrypted_srtcp: false,
        }
    }

    /// The attribute value (with the key: for the SDP body only).
    pub fn to_attr(&self) -> String {
        let mut s = format!("{} {} ", self.tag, self.spelling);
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                s.push(';');
            }
            s.push_str("inline:");
            s.push_str(&STANDARD.encode(&*k.key_salt));
            if let Some(l) = k.lifetime {
                if l.is_power_of_two() {
                    s.push_str(&format!("|2^{}", l.trailing_zeros()));
                } else {
                    s.push_str(&format!("|{l}"));
                }
            }
            if let Some((v, len)) = k.mki {
                s.push_str(&format!("|{v}:{len}"));
            }
        }
        if let Some(k) = self.kdr {
            s.push_str(&format!(" KDR={k}"));
        }
        if let Some(w) = self.wsh {
            s.push_str(&format!(" WSH={w}"));
        }
        s
    }

    /// The engine's crypto for one direction of this attribute (the control protocol's
    /// `tx` or `rx`): the keys travel as [`Secret`]s, zeroized when the request is dropped.
    pub fn engine_keys(&self) -> SdesRequest {
        SdesRequest {
            suite: self.suite.sdp_name().to_owned(),
            keys: self
                .keys
                .iter()
                .map(|k| KeyRequest {
                    key: Secret::new(STANDARD.encode(&*k.key_salt)),
                    mki: k.mki.map(|(v, _)| v),
                    mki_len: k.mki.map(|(_, len)| len),
                    lifetime: k.lifetime,
                })
                .collect(),
            replay_window: self.wsh.map(|w| w.clamp(64, 32768)),
            kdr: self.kdr.map(|k| 1u32 << k),
        }
    }
}

/// Random key||salt of the suite's length.
pub fn random_key(suite: Suite) -> Zeroizing<Vec<u8>> {
    let mut k = Zeroizing::new(vec![0u8; suite.master_len()]);
    // The system RNG failing is not something we can go on from; ring reports it only when
    // getrandom is unavailable.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k)
        .expect("system random number generator");
    k
}

fn parse_key(suite: Suite, s: &str) -> Result<KeyParam, CryptoAttrError> {
    let rest = s
        .strip_prefix("inline:")
        .ok_or(CryptoAttrError::NotInline)?;
    let mut f = rest.split('|');
    let b64 = f.next().unwrap_or("");
    let key_salt = Zeroizing::new(
        STANDARD
            .decode(b64)
            .or_else(|_| STANDARD_NO_PAD.decode(b64))
            .map_err(|_| CryptoAttrError::BadKey)?,
    );
    if key_salt.len() != suite.master_len() {
        return Err(CryptoAttrError::BadKey);
    }
    let mut lifetime = None;
    let mut mki = None;
    for p in f {
        if let Some((v, len)) = p.split_once(':') {
            let len: u8 = len.parse().map_err(|_| CryptoAttrError::BadMki)?;
            let v: u32 = v.parse().map_err(|_| CryptoAttrError::BadMki)?;
            if !(1..=4).contains(&len)
                || (len < 4 && u64::from(v) >= 1u64 << (8 * len))
                || mki.is_some()
            {
                return Err(CryptoAttrError::BadMki);
            }
            mki = Some((v, len));
        } else {
            if lifetime.is_some() || mki.is_some() {
                return Err(CryptoAttrError::BadLifetime);
            }
            lifetime = Some(parse_lifetime(p)?);
        }
    }
    Ok(KeyParam {
        key_salt,
        lifetime,
        mki,
    })
}

fn parse_lifetime(p: &str) -> Result<u64, CryptoAttrError> {
    let v = if let Some(e) = p.strip_prefix("2^") {
        let e: u32 = e.parse().map_err(|_| CryptoAttrError::BadLifetime)?;
        if e > 48 {
            return Err(CryptoAttrError::BadLifetime);
        }
        1u64 << e
    } else {
        p.parse().map_err(|_| CryptoAttrError::BadLifetime)?
    };
    if v == 0 {
        return Err(CryptoAttrError::BadLifetime);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4568_examples() {
        // RFC 4568 9.1.
        let a = CryptoAttr::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
        )
        .unwrap();
        assert_eq!(a.tag, 1);
        assert_eq!(a.suite, Suite::AesCm128HmacSha1_80);
        assert_eq!(a.keys[0].lifetime, Some(1 << 20));
        assert_eq!(a.keys[0].mki, Some((1, 4)));
        assert_eq!(
            a.to_attr(),
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"
        );
        // Two keys with MKIs (RFC 4568 6.1).
        let a = CryptoAttr::parse(
            "1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32;inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|2:32",
        );
        // MKI length 32 bytes is beyond what SRTP allows here (1-4).
        assert_eq!(a.unwrap_err(), CryptoAttrError::BadMki);
        let a = CryptoAttr::parse("2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|1:2;inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2:2 KDR=3 WSH=256").unwrap();
        assert_eq!(a.keys.len(), 2);
        assert_eq!(a.kdr, Some(3));
        assert_eq!(a.wsh, Some(256));
        assert_eq!(a.engine_keys().kdr, Some(8));
    }

    #[test]
    fn key_lengths_follow_the_suite() {
        for s in Suite::ALL {
            let a = CryptoAttr::generate(7, s, None, None);
            let want = match s {
                Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => 30,
                Suite::AesCm256HmacSha1_80 | Suite::AesCm256HmacSha1_32 => 46,
                Suite::AeadAes128Gcm => 28,
                Suite::AeadAes256Gcm => 44,
            };
            assert_eq!(a.keys[0].key_salt.len(), want);
            let back = CryptoAttr::parse(&a.to_attr()).unwrap();
            assert_eq!(back, a);
            // A key of another suite's length is refused.
            let other = if want == 30 {
                Suite::AeadAes256Gcm
            } else {
                Suite::AesCm128HmacSha1_80
            };
            let wrong = CryptoAttr {
                suite: other,
                spelling: other.sdp_name(),
                ..a.clone()
            };
            assert_eq!(
                CryptoAttr::parse(&wrong.to_attr()).unwrap_err(),
                CryptoAttrError::BadKey
            );
        }
    }

    #[test]
    fn quirks_and_refusals() {
        // Vendor spelling AES_CM_256 (e.g. some SBCs) and a key without base64 padding.
        let k = STANDARD_NO_PAD.encode([7u8; 46]);
        let a = CryptoAttr::parse(&format!("3 AES_CM_256_HMAC_SHA1_80 inline:{k}")).unwrap();
        assert_eq!(a.suite, Suite::AesCm256HmacSha1_80);
        assert!(
            a.to_attr().contains("AES_CM_256_HMAC_SHA1_80"),
            "the alias is echoed"
        );
        // Decimal lifetime.
        let k30 = STANDARD.encode([1u8; 30]);
        assert_eq!(
            CryptoAttr::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k30}|1048576"))
                .unwrap()
                .keys[0]
                .lifetime,
            Some(1048576)
        );
        for (line, e) in [
            (
                format!("x AES_CM_128_HMAC_SHA1_80 inline:{k30}"),
                CryptoAttrError::BadTag,
            ),
            (
                format!("1 F8_128_HMAC_SHA1_80 inline:{k30}"),
                CryptoAttrError::UnknownSuite,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 uri:{k30}"),
                CryptoAttrError::NotInline,
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:!!!".to_owned(),
                CryptoAttrError::BadKey,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k30}|2^99"),
                CryptoAttrError::BadLifetime,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k30}|300:1"),
                CryptoAttrError::BadMki,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k30} UNENCRYPTED_SRTP"),
                CryptoAttrError::UnsupportedParam,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k30};inline:{k30}"),
                CryptoAttrError::MkiMismatch,
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80".to_owned(),
                CryptoAttrError::Malformed,
            ),
        ] {
            assert_eq!(CryptoAttr::parse(&line).unwrap_err(), e, "{line}");
        }
        // Debug never shows the key.
        assert!(!format!("{a:?}").contains(&k[..10]));
    }
}
