//! AES-GCM (NIST SP 800-38D) for the RFC 7714 suites, shaped for SRTP's short packets.
//!
//! ring's AES-GCM is built for long inputs: below a few hundred bytes it runs counter mode and
//! GHASH as separate passes behind a general interface, about 123-140 ns for a 160-byte packet
//! on this project's machine, which left no room under issue 2's 130 ns bar for the SRTP layer
//! itself (`docs/performance.md`). With AES-NI and PCLMULQDQ (every x86-64 server CPU since
//! 2010; detected at run time) this module does the work itself:
//! - counter mode with the AES-NI code of [`super::aes_ctr`] (eight blocks in flight, round
//!   keys in registers);
//! - GHASH with carry-less multiplication over the byte-reflected field representation, eight
//!   blocks folded per reduction with precomputed powers H^1..H^8 (a 160-byte packet with a
//!   12-byte header is 12 blocks: two reductions);
//! - opening checks the tag (constant time) before it decrypts, so a forged packet leaves the
//!   buffer as it came.
//!
//! Elsewhere ring does the work. A key is 304 bytes (AES-128) or 368 (AES-256) against ring's
//! 544, boxed either way. Tests: RFC 7714's vectors (through [`super::cipher`]), the GCM
//! specification's test cases, and a property test against ring (random keys, nonces, AAD and
//! payload lengths, tampering).

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::cipher::Wiped;
use super::error::SrtpError;

/// Length of the tag (RFC 7714 uses 16 octets for both suites).
pub(crate) const TAG_LEN: usize = 16;

/// An AES-GCM key (16 or 32 bytes), boxed: the GCM suites are the rarer case, and AES-CM's
/// session keys stay inline.
pub(crate) enum GcmKey {
    /// AES-NI and PCLMULQDQ, AES-128.
    #[cfg(target_arch = "x86_64")]
    Clmul128(Box<clmul::Key<11>>),
    /// AES-NI and PCLMULQDQ, AES-256.
    #[cfg(target_arch = "x86_64")]
    Clmul256(Box<clmul::Key<15>>),
    /// ring (no AES-NI or PCLMULQDQ, or not x86-64).
    Ring(Box<Wiped<LessSafeKey>>),
}

impl GcmKey {
    /// The key for `key` (16 or 32 bytes; the suite table guarantees one of them).
    pub(crate) fn new(key: &[u8]) -> GcmKey {
        GcmKey::with_backend(key, true)
    }

    /// With our AES-NI/PCLMULQDQ code when `fast` (and the CPU has it), otherwise ring's. Tests
    /// compare the two.
    pub(crate) fn with_backend(key: &[u8], fast: bool) -> GcmKey {
        #[cfg(target_arch = "x86_64")]
        if fast && clmul::available() {
            use super::aes_ctr::ni::RoundKeys;
            return match key.len() {
                16 => GcmKey::Clmul128(Box::new(clmul::Key::new(RoundKeys::expand128(key)))),
                _ => GcmKey::Clmul256(Box::new(clmul::Key::new(RoundKeys::expand256(key)))),
            };
        }
        let _ = fast;
        GcmKey::Ring(Box::new(Wiped::new(ring_key(key))))
    }

    /// Replaces the key with `key` of the same length, reusing the box (a key derivation rate
    /// rekeys on the packet path, which must not allocate).
    pub(crate) fn rekey(&mut self, key: &[u8]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            GcmKey::Clmul128(k) => {
                **k = clmul::Key::new(super::aes_ctr::ni::RoundKeys::expand128(key));
            }
            #[cfg(target_arch = "x86_64")]
            GcmKey::Clmul256(k) => {
                **k = clmul::Key::new(super::aes_ctr::ni::RoundKeys::expand256(key));
            }
            GcmKey::Ring(k) => **k = Wiped::new(ring_key(key)),
        }
    }

    /// Encrypts `data` in place and returns the tag over `aad` and the ciphertext.
    #[inline]
    pub(crate) fn seal(&self, nonce: [u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; TAG_LEN] {
        match self {
            #[cfg(target_arch = "x86_64")]
            GcmKey::Clmul128(k) => k.seal(nonce, aad, data),
            #[cfg(target_arch = "x86_64")]
            GcmKey::Clmul256(k) => k.seal(nonce, aad, data),
            GcmKey::Ring(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        data,
                    )
                    // ring refuses only inputs over 2^36 bytes; a datagram is far shorter.
                    .expect("GCM input within limits");
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(tag.as_ref());
                out
            }
        }
    }

    /// Verifies and decrypts `data` (ciphertext || tag) in place; the plaintext is
    /// `data[..len - 16]`. Our code leaves `data` untouched when the tag is wrong; ring may
    /// have changed the ciphertext bytes.
    #[inline]
    pub(crate) fn open(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        data: &mut [u8],
    ) -> Result<(), SrtpError> {
        let Some(split) = data.len().checked_sub(TAG_LEN) else {
            return Err(SrtpError::AuthFailed);
        };
        let (ciphertext, tag) = data.split_at_mut(split);
        let ok = match self {
            #[cfg(target_arch = "x86_64")]
            GcmKey::Clmul128(k) => k.open(nonce, aad, ciphertext, tag),
            #[cfg(target_arch = "x86_64")]
            GcmKey::Clmul256(k) => k.open(nonce, aad, ciphertext, tag),
            GcmKey::Ring(k) => k
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(SrtpError::AuthFailed)
        }
    }
}

/// ring's key for a 16- or 32-byte AES key.
fn ring_key(key: &[u8]) -> LessSafeKey {
    let alg = if key.len() == 16 {
        &AES_128_GCM
    } else {
        &AES_256_GCM
    };
    LessSafeKey::new(UnboundKey::new(alg, key).expect("GCM key length"))
}

/// The pre-counter block J0 of a 96-bit nonce (SP 800-38D 7.1): nonce || 0^31 || 1.
fn j0(nonce: [u8; 12]) -> [u8; 16] {
    let mut j = [0u8; 16];
    j[..12].copy_from_slice(&nonce);
    j[15] = 1;
    j
}

/// GHASH with PCLMULQDQ and AES-GCM on top of the AES-NI counter mode.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(crate) mod clmul {
    use core::arch::x86_64::{
        __m128i, _mm_clmulepi64_si128, _mm_loadu_si128, _mm_or_si128, _mm_set_epi8,
        _mm_setzero_si128, _mm_shuffle_epi8, _mm_slli_epi32, _mm_slli_si128, _mm_srli_epi32,
        _mm_srli_si128, _mm_storeu_si128, _mm_xor_si128,
    };

    use subtle::ConstantTimeEq;
    use zeroize::Zeroize;

    use super::super::aes_ctr::ni::{self, RoundKeys};
    use super::{TAG_LEN, j0};

    /// Blocks folded per reduction, and so powers of H kept.
    const FOLD: usize = 8;

    /// Whether this CPU has AES-NI, PCLMULQDQ and SSSE3 (the byte shuffle).
    pub(crate) fn available() -> bool {
        ni::available()
            && std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("ssse3")
    }

    /// An AES-GCM key: the AES round keys and H^1..H^8 (byte-reflected), all wiped on drop.
    pub(crate) struct Key<const N: usize> {
        aes: RoundKeys<N>,
        powers: [[u8; 16]; FOLD],
    }

    impl<const N: usize> Drop for Key<N> {
        fn drop(&mut self) {
            self.powers.zeroize();
        }
    }

    impl<const N: usize> Key<N> {
        /// The GCM key over `aes`: H = E_K(0^128) and its powers.
        pub(crate) fn new(aes: RoundKeys<N>) -> Key<N> {
            assert!(available(), "PCLMULQDQ code on a CPU without it");
            let mut h = [0u8; 16];
            aes.apply_keystream([0; 16], &mut h);
            let mut powers = [[0u8; 16]; FOLD];
            // SAFETY: the CPU has PCLMULQDQ and SSSE3 (asserted above).
            unsafe { h_powers(&h, &mut powers) };
            h.zeroize();
            Key { aes, powers }
        }

        /// Encrypts `data` in place; returns the tag.
        #[inline]
        pub(crate) fn seal(&self, nonce: [u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; TAG_LEN] {
            let j0 = j0(nonce);
            self.aes.apply_keystream(first_counter(j0), data);
            // SAFETY: a `Key` exists only where `available()` held (checked in `new`).
            let mut tag = unsafe { ghash(&self.powers, aad, data) };
            self.aes.apply_keystream(j0, &mut tag);
            tag
        }

        /// Checks `tag` over `aad` and `ciphertext`, then decrypts in place; `false` (and
        /// `ciphertext` untouched) when the tag is wrong.
        #[inline]
        pub(crate) fn open(
            &self,
            nonce: [u8; 12],
            aad: &[u8],
            ciphertext: &mut [u8],
            tag: &[u8],
        ) -> bool {
            let j0 = j0(nonce);
            // SAFETY: as in `seal`.
            let mut expected = unsafe { ghash(&self.powers, aad, ciphertext) };
            self.aes.apply_keystream(j0, &mut expected);
            if !bool::from(expected.ct_eq(tag)) {
                return false;
            }
            self.aes.apply_keystream(first_counter(j0), ciphertext);
            true
        }
    }

    /// inc32(J0), the first keystream block. Counter mode adds to the whole 128-bit block;
    /// with a 96-bit nonce the low word starts at 2 and a datagram's few blocks never carry
    /// out of it, so that equals GCM's 32-bit increment.
    fn first_counter(mut j0: [u8; 16]) -> [u8; 16] {
        j0[15] = 2;
        j0
    }

    #[inline(always)]
    fn load(bytes: &[u8; 16]) -> __m128i {
        // SAFETY: `bytes` is 16 readable bytes; the load is unaligned.
        unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
    }

    #[inline(always)]
    fn store(v: __m128i) -> [u8; 16] {
        let mut out = [0u8; 16];
        // SAFETY: `out` is 16 writable bytes; the store is unaligned.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), v) };
        out
    }

    /// Reverses the bytes of a block: GHASH's bit order is reflected, and with the bytes
    /// reversed the block is a 128-bit polynomial PCLMULQDQ can multiply.
    #[target_feature(enable = "ssse3")]
    #[inline]
    fn reflect(v: __m128i) -> __m128i {
        _mm_shuffle_epi8(
            v,
            _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        )
    }

    /// The 256-bit carry-less product `a * b`, as (low, high) halves.
    #[target_feature(enable = "pclmulqdq")]
    #[inline]
    fn mul_wide(a: __m128i, b: __m128i) -> (__m128i, __m128i) {
        let low = _mm_clmulepi64_si128(a, b, 0x00);
        let high = _mm_clmulepi64_si128(a, b, 0x11);
        let middle = _mm_xor_si128(
            _mm_clmulepi64_si128(a, b, 0x10),
            _mm_clmulepi64_si128(a, b, 0x01),
        );
        (
            _mm_xor_si128(low, _mm_slli_si128(middle, 8)),
            _mm_xor_si128(high, _mm_srli_si128(middle, 8)),
        )
    }

    /// Reduces a 256-bit product of reflected operands modulo the GCM polynomial
    /// x^128 + x^7 + x^2 + x + 1: first a shift left by one bit (the product of two reflected
    /// 128-bit values is one bit short of the reflected product), then the two folding phases
    /// of the reflected reduction (shifts by 31/30/25, then by 1/2/7).
    #[target_feature(enable = "sse2")]
    #[inline]
    fn reduce(low: __m128i, high: __m128i) -> __m128i {
        // Shift <high:low> left by one bit, across the 32-bit lanes and the halves.
        let carry_low = _mm_srli_epi32(low, 31);
        let carry_high = _mm_srli_epi32(high, 31);
        let mut lo = _mm_or_si128(_mm_slli_epi32(low, 1), _mm_slli_si128(carry_low, 4));
        let hi = _mm_or_si128(
            _mm_or_si128(_mm_slli_epi32(high, 1), _mm_slli_si128(carry_high, 4)),
            _mm_srli_si128(carry_low, 12),
        );
        // First phase.
        let a = _mm_xor_si128(
            _mm_xor_si128(_mm_slli_epi32(lo, 31), _mm_slli_epi32(lo, 30)),
            _mm_slli_epi32(lo, 25),
        );
        let spill = _mm_srli_si128(a, 4);
        lo = _mm_xor_si128(lo, _mm_slli_si128(a, 12));
        // Second phase.
        let b = _mm_xor_si128(
            _mm_xor_si128(_mm_srli_epi32(lo, 1), _mm_srli_epi32(lo, 2)),
            _mm_xor_si128(_mm_srli_epi32(lo, 7), spill),
        );
        _mm_xor_si128(hi, _mm_xor_si128(lo, b))
    }

    /// `a * b` in GF(2^128), reflected operands.
    #[target_feature(enable = "pclmulqdq,sse2")]
    #[inline]
    fn mul(a: __m128i, b: __m128i) -> __m128i {
        let (low, high) = mul_wide(a, b);
        reduce(low, high)
    }

    /// H^1..H^8 from H (as bytes from AES), reflected.
    #[target_feature(enable = "pclmulqdq,ssse3")]
    fn h_powers(h: &[u8; 16], out: &mut [[u8; 16]; FOLD]) {
        let h1 = reflect(load(h));
        let mut p = h1;
        out[0] = store(p);
        for slot in &mut out[1..] {
            p = mul(p, h1);
            *slot = store(p);
        }
    }

    /// GHASH's running state and the blocks waiting to be folded into it.
    struct Ghash {
        powers: [__m128i; FOLD],
        x: __m128i,
        pending: [__m128i; FOLD],
        n: usize,
    }

    impl Ghash {
        /// Queues one (reflected) block, folding when `FOLD` are waiting.
        #[target_feature(enable = "pclmulqdq,ssse3")]
        #[inline]
        fn push(&mut self, block: __m128i) {
            self.pending[self.n] = block;
            self.n += 1;
            if self.n == FOLD {
                self.fold();
            }
        }

        /// X = (X + B1) * H^n + B2 * H^(n-1) + ... + Bn * H: one reduction for n blocks.
        #[target_feature(enable = "pclmulqdq,ssse3")]
        #[inline]
        fn fold(&mut self) {
            let n = self.n;
            if n == 0 {
                return;
            }
            let (mut low, mut high) =
                mul_wide(_mm_xor_si128(self.x, self.pending[0]), self.powers[n - 1]);
            for i in 1..n {
                let (l, h) = mul_wide(self.pending[i], self.powers[n - 1 - i]);
                low = _mm_xor_si128(low, l);
                high = _mm_xor_si128(high, h);
            }
            self.x = reduce(low, high);
            self.n = 0;
        }

        /// Absorbs `data` as blocks, the last one padded with zeros.
        #[target_feature(enable = "pclmulqdq,ssse3")]
        #[inline]
        fn absorb(&mut self, data: &[u8]) {
            let (blocks, tail) = data.as_chunks::<16>();
            for b in blocks {
                self.push(reflect(load(b)));
            }
            if !tail.is_empty() {
                let mut last = [0u8; 16];
                last[..tail.len()].copy_from_slice(tail);
                self.push(reflect(load(&last)));
            }
        }
    }

    /// GHASH_H(A, C) (SP 800-38D 6.4, 7.1): the blocks of `aad` and `ciphertext`, each
    /// zero-padded, then their bit lengths.
    #[target_feature(enable = "pclmulqdq,ssse3")]
    fn ghash(powers: &[[u8; 16]; FOLD], aad: &[u8], ciphertext: &[u8]) -> [u8; 16] {
        let zero = _mm_setzero_si128();
        let mut g = Ghash {
            powers: core::array::from_fn(|i| load(&powers[i])),
            x: zero,
            pending: [zero; FOLD],
            n: 0,
        };
        g.absorb(aad);
        g.absorb(ciphertext);
        let bits =
            (u128::from(aad.len() as u64 * 8) << 64) | u128::from(ciphertext.len() as u64 * 8);
        g.push(reflect(load(&bits.to_be_bytes())));
        g.fold();
        store(reflect(g.x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::srtp::kdf::tests::hex;
    use proptest::prelude::*;

    /// The GCM specification's test cases 2-4 and 13-16 (McGrew and Viega, "The Galois/Counter
    /// Mode of Operation", appendix B; the 96-bit IV ones), through both backends.
    #[test]
    fn gcm_specification_test_cases() {
        let p = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
        let cases = [
            // (key, plaintext, aad, ciphertext, tag)
            (
                "00000000000000000000000000000000",
                "00000000000000000000000000000000",
                "",
                "0388dace60b6a392f328c2b971b2fe78",
                "ab6e47d42cec13bdf53a67b21257bddf",
            ),
            (
                "feffe9928665731c6d6a8f9467308308",
                p,
                "",
                "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
                "4d5c2af327cd64a62cf35abd2ba6fab4",
            ),
            (
                "feffe9928665731c6d6a8f9467308308",
                &p[..120],
                "feedfacedeadbeeffeedfacedeadbeefabaddad2",
                "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
                "5bc94fbc3221a5db94fae95ae7121a47",
            ),
            (
                "0000000000000000000000000000000000000000000000000000000000000000",
                "",
                "",
                "",
                "530f8afbc74536b9a963b4f1c4cb738b",
            ),
            (
                "0000000000000000000000000000000000000000000000000000000000000000",
                "00000000000000000000000000000000",
                "",
                "cea7403d4d606b6e074ec5d3baf39d18",
                "d0d1c8a799996bf0265b98b5d48ab919",
            ),
            (
                "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
                p,
                "",
                "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
                "b094dac5d93471bdec1a502270e3cc6c",
            ),
            (
                "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
                &p[..120],
                "feedfacedeadbeeffeedfacedeadbeefabaddad2",
                "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
                "76fc6ece0f4e1768cddf8853bb2d551b",
            ),
        ];
        for (i, (key, plain, aad, cipher, tag)) in cases.into_iter().enumerate() {
            // Test cases 1-2 and 13-14 use the zero IV, the others cafebabefacedbaddecaf888.
            let iv = if key.bytes().all(|b| b == b'0') {
                [0u8; 12]
            } else {
                hex("cafebabefacedbaddecaf888").try_into().unwrap()
            };
            for fast in [true, false] {
                let k = GcmKey::with_backend(&hex(key), fast);
                let mut data = hex(plain);
                let t = k.seal(iv, &hex(aad), &mut data);
                assert_eq!(data, hex(cipher), "case {i} fast {fast}");
                assert_eq!(t.to_vec(), hex(tag), "case {i} fast {fast}");
                data.extend_from_slice(&t);
                k.open(iv, &hex(aad), &mut data).unwrap();
                assert_eq!(data[..data.len() - TAG_LEN], hex(plain)[..]);
            }
        }
    }

    #[test]
    fn this_machine_uses_its_own_gcm_when_it_can() {
        let k = GcmKey::new(&[3; 16]);
        #[cfg(target_arch = "x86_64")]
        if clmul::available() {
            assert!(matches!(k, GcmKey::Clmul128(_)));
            return;
        }
        assert!(matches!(k, GcmKey::Ring(_)));
    }

    #[test]
    fn short_or_forged_input_fails_and_is_left_alone() {
        let k = GcmKey::new(&[9; 32]);
        let mut short = [0u8; 15];
        assert_eq!(k.open([0; 12], b"", &mut short), Err(SrtpError::AuthFailed));
        let mut data = b"a payload of some length".to_vec();
        let tag = k.seal([1; 12], b"header", &mut data);
        data.extend_from_slice(&tag);
        let last = data.len() - 1;
        data[last] ^= 1;
        let before = data.clone();
        assert_eq!(
            k.open([1; 12], b"header", &mut data),
            Err(SrtpError::AuthFailed)
        );
        assert_eq!(data, before);
    }

    proptest! {
        /// Ours equals ring for any key, nonce, AAD and payload length (both sizes; AAD and
        /// payloads across the 8-block fold and the padding), rekeying in place equals a fresh
        /// key, and a flipped bit anywhere fails to open.
        #[test]
        fn ours_and_ring_agree(
            key in proptest::collection::vec(any::<u8>(), 32..=32),
            long in any::<bool>(),
            nonce in any::<[u8; 12]>(),
            aad_len in 0usize..80,
            len in 0usize..600,
            flip in any::<prop::sample::Index>(),
        ) {
            let key = if long { &key[..] } else { &key[..16] };
            let aad: Vec<u8> = (0..aad_len).map(|i| (i * 7) as u8).collect();
            let plain: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
            let ours = GcmKey::with_backend(key, true);
            let ring = GcmKey::with_backend(key, false);
            let mut a = plain.clone();
            let mut b = plain.clone();
            let tag_a = ours.seal(nonce, &aad, &mut a);
            let tag_b = ring.seal(nonce, &aad, &mut b);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(tag_a, tag_b);
            let mut rekeyed = GcmKey::with_backend(&[0x5a; 32][..key.len()], true);
            rekeyed.rekey(key);
            let mut c = plain.clone();
            prop_assert_eq!(rekeyed.seal(nonce, &aad, &mut c), tag_a);
            a.extend_from_slice(&tag_a);
            let mut opened = a.clone();
            prop_assert!(ring.open(nonce, &aad, &mut opened).is_ok());
            prop_assert_eq!(&opened[..len], &plain[..]);
            let mut opened = a.clone();
            prop_assert!(ours.open(nonce, &aad, &mut opened).is_ok());
            prop_assert_eq!(&opened[..len], &plain[..]);
            let at = flip.index(a.len() + aad.len());
            let (mut wire, mut aad2) = (a.clone(), aad.clone());
            if at < wire.len() { wire[at] ^= 0x80 } else { aad2[at - wire.len()] ^= 0x80 }
            prop_assert!(ours.open(nonce, &aad2, &mut wire).is_err());
        }
    }
}
