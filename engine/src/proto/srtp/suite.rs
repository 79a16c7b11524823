//! The SRTP protection suites, declared once.
//!
//! One table drives everything a suite is known by: its SDES name (RFC 4568, RFC 6188,
//! RFC 7714), its DTLS-SRTP protection profile id (RFC 5764, RFC 7714), and the key, salt and
//! tag lengths that the key derivation and the packet transforms use.

use core::fmt;
use core::str::FromStr;

/// An SRTP protection suite.
///
/// Variants are listed in the order of the RFCs that define them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum Suite {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag (RFC 3711, RFC 4568).
    AesCm128HmacSha1_80 = 0,
    /// AES-128 counter mode, HMAC-SHA1 with a 32-bit SRTP tag (SRTCP keeps 80 bits).
    AesCm128HmacSha1_32 = 1,
    /// AES-256 counter mode, HMAC-SHA1 with an 80-bit tag (RFC 6188).
    AesCm256HmacSha1_80 = 2,
    /// AES-256 counter mode, HMAC-SHA1 with a 32-bit SRTP tag (RFC 6188).
    AesCm256HmacSha1_32 = 3,
    /// AES-128 in Galois/Counter Mode with a 128-bit tag (RFC 7714).
    AeadAes128Gcm = 4,
    /// AES-256 in Galois/Counter Mode with a 128-bit tag (RFC 7714).
    AeadAes256Gcm = 5,
}

/// The two families of packet transform.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CipherKind {
    /// AES in counter mode for confidentiality, HMAC-SHA1 for authentication (RFC 3711).
    AesCmHmacSha1,
    /// AES-GCM authenticated encryption (RFC 7714).
    AesGcm,
}

/// What a suite is: every length and name, from the one table.
#[derive(Debug)]
pub struct SuiteParams {
    /// The suite this row describes.
    pub suite: Suite,
    /// Name in SDP `a=crypto` lines.
    pub sdp_name: &'static str,
    /// DTLS-SRTP protection profile id, where one is registered.
    pub dtls_profile: Option<u16>,
    /// The packet transform family.
    pub cipher: CipherKind,
    /// Master key length in bytes (also the AES key length).
    pub master_key_len: usize,
    /// Master salt length in bytes.
    pub master_salt_len: usize,
    /// Session salt length in bytes.
    pub session_salt_len: usize,
    /// Session authentication key length in bytes (0 for AEAD suites).
    pub auth_key_len: usize,
    /// Authentication tag length of SRTP packets in bytes.
    pub rtp_tag_len: usize,
    /// Authentication tag length of SRTCP packets in bytes.
    pub rtcp_tag_len: usize,
}

/// The table, indexed by `Suite as usize`.
static SUITES: [SuiteParams; 6] = [
    SuiteParams {
        suite: Suite::AesCm128HmacSha1_80,
        sdp_name: "AES_CM_128_HMAC_SHA1_80",
        dtls_profile: Some(0x0001),
        cipher: CipherKind::AesCmHmacSha1,
        master_key_len: 16,
        master_salt_len: 14,
        session_salt_len: 14,
        auth_key_len: 20,
        rtp_tag_len: 10,
        rtcp_tag_len: 10,
    },
    SuiteParams {
        suite: Suite::AesCm128HmacSha1_32,
        sdp_name: "AES_CM_128_HMAC_SHA1_32",
        dtls_profile: Some(0x0002),
        cipher: CipherKind::AesCmHmacSha1,
        master_key_len: 16,
        master_salt_len: 14,
        session_salt_len: 14,
        auth_key_len: 20,
        rtp_tag_len: 4,
        // RFC 5764 4.1.2: "the SRTCP authentication tag length is 80 bits" for _32 profiles.
        rtcp_tag_len: 10,
    },
    SuiteParams {
        suite: Suite::AesCm256HmacSha1_80,
        sdp_name: "AES_256_CM_HMAC_SHA1_80",
        dtls_profile: None,
        cipher: CipherKind::AesCmHmacSha1,
        master_key_len: 32,
        master_salt_len: 14,
        session_salt_len: 14,
        auth_key_len: 20,
        rtp_tag_len: 10,
        rtcp_tag_len: 10,
    },
    SuiteParams {
        suite: Suite::AesCm256HmacSha1_32,
        sdp_name: "AES_256_CM_HMAC_SHA1_32",
        dtls_profile: None,
        cipher: CipherKind::AesCmHmacSha1,
        master_key_len: 32,
        master_salt_len: 14,
        session_salt_len: 14,
        auth_key_len: 20,
        rtp_tag_len: 4,
        rtcp_tag_len: 10,
    },
    SuiteParams {
        suite: Suite::AeadAes128Gcm,
        sdp_name: "AEAD_AES_128_GCM",
        dtls_profile: Some(0x0007),
        cipher: CipherKind::AesGcm,
        master_key_len: 16,
        master_salt_len: 12,
        session_salt_len: 12,
        auth_key_len: 0,
        rtp_tag_len: 16,
        rtcp_tag_len: 16,
    },
    SuiteParams {
        suite: Suite::AeadAes256Gcm,
        sdp_name: "AEAD_AES_256_GCM",
        dtls_profile: Some(0x0008),
        cipher: CipherKind::AesGcm,
        master_key_len: 32,
        master_salt_len: 12,
        session_salt_len: 12,
        auth_key_len: 0,
        rtp_tag_len: 16,
        rtcp_tag_len: 16,
    },
];

/// Spellings some equipment sends for the RFC 6188 suites (word order swapped).
const SDP_ALIASES: [(&str, Suite); 2] = [
    ("AES_CM_256_HMAC_SHA1_80", Suite::AesCm256HmacSha1_80),
    ("AES_CM_256_HMAC_SHA1_32", Suite::AesCm256HmacSha1_32),
];

impl Suite {
    /// Every suite, in table order.
    pub const ALL: [Suite; 6] = [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AesCm256HmacSha1_80,
        Suite::AesCm256HmacSha1_32,
        Suite::AeadAes128Gcm,
        Suite::AeadAes256Gcm,
    ];

    /// This suite's row of the table.
    pub fn params(self) -> &'static SuiteParams {
        &SUITES[self as usize]
    }

    /// The SDES name, as in `a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:...`.
    pub fn sdp_name(self) -> &'static str {
        self.params().sdp_name
    }

    /// The DTLS-SRTP protection profile id, if one is registered for this suite.
    pub fn dtls_profile(self) -> Option<u16> {
        self.params().dtls_profile
    }

    /// Length of `master key || master salt`, the SDES `inline:` material, in bytes.
    pub fn master_len(self) -> usize {
        let p = self.params();
        p.master_key_len + p.master_salt_len
    }

    /// Looks a suite up by its SDES name (the RFC spelling, or a known vendor alias).
    pub fn from_sdp_name(name: &str) -> Option<Suite> {
        Suite::from_sdp_spelling(name).map(|(s, _)| s)
    }

    /// Looks a suite up by its SDES name and gives the spelling that matched, so that an
    /// answer can echo a vendor alias back in the offerer's words.
    pub fn from_sdp_spelling(name: &str) -> Option<(Suite, &'static str)> {
        SUITES
            .iter()
            .find(|p| p.sdp_name == name)
            .map(|p| (p.suite, p.sdp_name))
            .or_else(|| {
                SDP_ALIASES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(n, s)| (*s, *n))
            })
    }

    /// Looks a suite up by its DTLS-SRTP protection profile id.
    pub fn from_dtls_profile(id: u16) -> Option<Suite> {
        SUITES
            .iter()
            .find(|p| p.dtls_profile == Some(id))
            .map(|p| p.suite)
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdp_name())
    }
}

/// The error for a suite name that names no suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown SRTP suite name")]
pub struct UnknownSuite;

impl FromStr for Suite {
    type Err = UnknownSuite;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Suite::from_sdp_name(s).ok_or(UnknownSuite)
    }
}

/// On the wire (control protocol, reports) a suite is its SDES name.
impl serde::Serialize for Suite {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.sdp_name())
    }
}

impl<'de> serde::Deserialize<'de> for Suite {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Suite, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Suite::from_sdp_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format_args!("{name:?} is not an SRTP suite")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_discriminant() {
        for suite in Suite::ALL {
            assert_eq!(suite.params().suite, suite);
        }
    }

    #[test]
    fn names_and_profiles_round_trip() {
        for suite in Suite::ALL {
            assert_eq!(Suite::from_sdp_name(suite.sdp_name()), Some(suite));
            assert_eq!(suite.to_string().parse::<Suite>(), Ok(suite));
            if let Some(id) = suite.dtls_profile() {
                assert_eq!(Suite::from_dtls_profile(id), Some(suite));
            }
        }
        assert_eq!(
            Suite::from_sdp_name("AES_CM_256_HMAC_SHA1_80"),
            Some(Suite::AesCm256HmacSha1_80)
        );
        assert_eq!("F8_128_HMAC_SHA1_80".parse::<Suite>(), Err(UnknownSuite));
        assert_eq!(Suite::from_dtls_profile(0x0005), None);
    }

    /// RFC 4568 6.2 and RFC 6188 / RFC 7714: the `inline:` key||salt lengths are 30, 46, 28
    /// and 44 bytes.
    #[test]
    fn sdes_material_lengths() {
        assert_eq!(Suite::AesCm128HmacSha1_80.master_len(), 30);
        assert_eq!(Suite::AesCm128HmacSha1_32.master_len(), 30);
        assert_eq!(Suite::AesCm256HmacSha1_80.master_len(), 46);
        assert_eq!(Suite::AesCm256HmacSha1_32.master_len(), 46);
        assert_eq!(Suite::AeadAes128Gcm.master_len(), 28);
        assert_eq!(Suite::AeadAes256Gcm.master_len(), 44);
    }
}
