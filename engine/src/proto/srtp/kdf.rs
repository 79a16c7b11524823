//! SRTP key derivation (RFC 3711 4.3): the AES-CM PRF and its labels.

use super::aes_ctr::InlineAes;

/// Label of the SRTP encryption key (RFC 3711 4.3.1).
pub(crate) const LABEL_RTP_ENCRYPTION: u8 = 0x00;
/// Label of the SRTP authentication key.
pub(crate) const LABEL_RTP_AUTH: u8 = 0x01;
/// Label of the SRTP salt.
pub(crate) const LABEL_RTP_SALT: u8 = 0x02;
/// Label of the SRTCP encryption key.
pub(crate) const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
/// Label of the SRTCP authentication key.
pub(crate) const LABEL_RTCP_AUTH: u8 = 0x04;
/// Label of the SRTCP salt.
pub(crate) const LABEL_RTCP_SALT: u8 = 0x05;

/// The AES-CM PRF of RFC 3711 4.3.1 and 4.3.3: fills `out` with session key material for
/// `label` and `r` (the packet index divided by the key derivation rate, 0 if the rate is 0).
///
/// RFC 3711 4.3.1: "Let key_id = <label> || r. Let x = key_id XOR master_salt, where key_id
/// and master_salt are aligned so that their least significant bits agree (right-alignment)."
/// A 96-bit AEAD master salt (RFC 7714 11) is padded with two zero bytes on the right to the
/// 112 bits the PRF takes, as RFC 9335 A.2 shows.
pub(crate) fn derive(prf: &InlineAes, master_salt: &[u8], label: u8, r: u64, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    for (b, r) in iv[8..14].iter_mut().zip(&r.to_be_bytes()[2..]) {
        *b ^= r;
    }
    out.fill(0);
    prf.apply_keystream(iv, out);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::srtp::aes_ctr::AesKey;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn prf(key: &str, salt: &str, label: u8, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        derive(&InlineAes::new(&hex(key)), &hex(salt), label, 0, &mut out);
        out
    }

    /// RFC 3711 Appendix B.2, AES-CM test vectors: keystream blocks 0, 1, 2 and 0xfeff to 0xff01.
    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        for use_ni in [true, false] {
            let key = AesKey::with_backend(&hex("2B7E151628AED2A6ABF7158809CF4F3C"), use_ni);
            b2_keystream(|iv, ks| key.apply_keystream(iv, ks));
        }
        let key = InlineAes::new(&hex("2B7E151628AED2A6ABF7158809CF4F3C"));
        b2_keystream(|iv, ks| key.apply_keystream(iv, ks));
    }

    fn b2_keystream(apply: impl Fn([u8; 16], &mut [u8])) {
        let iv: [u8; 16] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000").try_into().unwrap();
        let mut ks = vec![0u8; 16 * 0xff02];
        apply(iv, &mut ks);
        let block = |i: usize| &ks[16 * i..16 * (i + 1)];
        assert_eq!(block(0), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(block(1), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(block(2), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        assert_eq!(block(0xfeff), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xff00), hex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xff01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    /// RFC 3711 Appendix B.3, key derivation test vectors.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let (k, s) = (
            "E1F97A0D3E018BE0D64FA32C06DE4139",
            "0EC675AD498AFEEBB6960B3AABE6",
        );
        assert_eq!(
            prf(k, s, LABEL_RTP_ENCRYPTION, 16),
            hex("C61E7A93744F39EE10734AFE3FF7A087")
        );
        assert_eq!(
            prf(k, s, LABEL_RTP_SALT, 14),
            hex("30CBBC08863D8C85D49DB34A9AE1")
        );
        assert_eq!(
            prf(k, s, LABEL_RTP_AUTH, 94),
            hex(
                "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"
            )
        );
    }

    /// RFC 6188 7.2, key derivation with AES-256.
    #[test]
    fn rfc6188_aes256_key_derivation() {
        let k = "F0F04914B513F2763A1B1FA130F10E2998F6F6E43E4309D1E622A0E332B9F1B6";
        let s = "3B04803DE51EE7C96423AB5B78D2";
        assert_eq!(
            prf(k, s, LABEL_RTP_ENCRYPTION, 32),
            hex("5BA1064E30EC51613CAD926C5A28EF731EC7FB397F70A960653CAF06554CD8C4")
        );
        assert_eq!(
            prf(k, s, LABEL_RTP_SALT, 14),
            hex("FA31791685CA444A9E07C6C64E93")
        );
        assert_eq!(
            prf(k, s, LABEL_RTP_AUTH, 20),
            hex("FD9C32D39ED5FBB5A9DC96B30818454D1313DC05")
        );
    }

    /// RFC 9335 A.2 (AES-GCM session material from a 96-bit master salt): the salt is
    /// right-padded, as RFC 7714 11 requires.
    #[test]
    fn rfc9335_a2_gcm_key_derivation() {
        let (k, s) = (
            "000102030405060708090a0b0c0d0e0f",
            "a0a1a2a3a4a5a6a7a8a9aaab",
        );
        assert_eq!(
            prf(k, s, LABEL_RTP_ENCRYPTION, 16),
            hex("077c6143cb221bc355ff23d5f984a16e")
        );
        assert_eq!(
            prf(k, s, LABEL_RTP_SALT, 12),
            hex("9af3e95364ebac9c99c5a7c4")
        );
    }

    /// RFC 3711 4.3.1: r enters the low 48 bits of key_id, so derivation with r != 0 equals
    /// derivation with r = 0 under a salt XORed with r in its last six bytes.
    #[test]
    fn r_is_xored_into_the_low_48_bits() {
        let key = InlineAes::new(&hex("E1F97A0D3E018BE0D64FA32C06DE4139"));
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let r: u64 = 0x0000_1234_5678_9abc;
        let mut with_r = [0u8; 16];
        derive(&key, &salt, LABEL_RTP_ENCRYPTION, r, &mut with_r);
        let mut shifted_salt = salt.clone();
        for (b, r) in shifted_salt[8..].iter_mut().zip(&r.to_be_bytes()[2..]) {
            *b ^= r;
        }
        let mut expected = [0u8; 16];
        derive(&key, &shifted_salt, LABEL_RTP_ENCRYPTION, 0, &mut expected);
        assert_eq!(with_r, expected);
        let mut r0 = [0u8; 16];
        derive(&key, &salt, LABEL_RTP_ENCRYPTION, 0, &mut r0);
        assert_ne!(with_r, r0);
    }
}
