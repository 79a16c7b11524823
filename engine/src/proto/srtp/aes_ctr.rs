//! AES in counter mode (RFC 3711 4.1.1), for the AES-CM packet transform and the key
//! derivation PRF, with expanded keys small enough to hold tens of thousands of streams.
//!
//! The `aes` crate keeps every key as a union of its AES-NI round keys and its bitsliced
//! software schedule, 704 bytes for AES-128 and 960 for AES-256, whichever the CPU uses. A
//! stream holds four session keys (RTP and RTCP, each way), so those unions alone were 4 KB of
//! the 7 KB an SDES stream cost (`benches/memory.rs`). On x86-64 with AES-NI, which run-time
//! detection finds on every x86-64 server CPU since 2010, this module expands keys itself into
//! the 11 or 15 round keys the AES instructions take (176 or 240 bytes) and runs the rounds
//! with `core::arch` intrinsics. Elsewhere (no AES-NI, or another architecture) the `aes`
//! crate does the work, boxed so that the common case stays small.
//!
//! Two holders share the keystream code: [`AesKey`] is what a session keeps (AES-128 round keys
//! inline, anything larger boxed, rekeyed in place so that a key derivation rate does not
//! allocate on the packet path), [`InlineAes`] is a stack value for the key derivation PRF.

use aes::cipher::consts::U16;
use aes::cipher::{BlockEncrypt, BlockSizeUser, KeyInit};

/// Keystream blocks generated per batch: enough to fill the AES pipeline.
const BLOCKS_PER_BATCH: usize = 8;

/// An expanded AES key as a session holds it. Round keys are zeroized on drop.
pub(crate) enum AesKey {
    /// AES-128 with AES-NI: 11 round keys inline.
    #[cfg(target_arch = "x86_64")]
    Ni128(ni::RoundKeys<11>),
    /// AES-256 with AES-NI: 15 round keys, boxed (the rarer suites pay for their size).
    #[cfg(target_arch = "x86_64")]
    Ni256(Box<ni::RoundKeys<15>>),
    /// The `aes` crate (no AES-NI, or not x86-64).
    Soft128(Box<aes::Aes128>),
    /// The `aes` crate, AES-256.
    Soft256(Box<aes::Aes256>),
}

/// An expanded AES key held inline, for the key derivation PRF: deriving session keys again
/// (key derivation rate, RTCP keys) must not allocate. Lives on the stack only.
#[allow(clippy::large_enum_variant)]
pub(crate) enum InlineAes {
    #[cfg(target_arch = "x86_64")]
    Ni128(ni::RoundKeys<11>),
    #[cfg(target_arch = "x86_64")]
    Ni256(ni::RoundKeys<15>),
    Soft128(aes::Aes128),
    Soft256(aes::Aes256),
}

impl AesKey {
    /// Expands `key` (16 or 32 bytes; the suite table guarantees one of them).
    pub(crate) fn new(key: &[u8]) -> AesKey {
        AesKey::with_backend(key, ni::available())
    }

    /// Expands `key` with AES-NI when `use_ni` (and the CPU has it), otherwise with the
    /// `aes` crate. Tests compare the two.
    pub(crate) fn with_backend(key: &[u8], use_ni: bool) -> AesKey {
        #[cfg(target_arch = "x86_64")]
        if use_ni && ni::available() {
            return match key.len() {
                16 => AesKey::Ni128(ni::RoundKeys::expand128(key)),
                _ => AesKey::Ni256(Box::new(ni::RoundKeys::expand256(key))),
            };
        }
        let _ = use_ni;
        match key.len() {
            16 => AesKey::Soft128(Box::new(aes::Aes128::new(key.into()))),
            32 => AesKey::Soft256(Box::new(aes::Aes256::new(key.into()))),
            // Only called with session keys whose lengths come from the suite table.
            n => unreachable!("AES key of {n} bytes"),
        }
    }

    /// Replaces the key with `key` of the same length, reusing any box: a key derivation rate
    /// re-derives session keys on the packet path, which must not allocate.
    pub(crate) fn rekey(&mut self, key: &[u8]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            AesKey::Ni128(k) => *k = ni::RoundKeys::expand128(key),
            #[cfg(target_arch = "x86_64")]
            AesKey::Ni256(k) => **k = ni::RoundKeys::expand256(key),
            AesKey::Soft128(k) => **k = aes::Aes128::new(key.into()),
            AesKey::Soft256(k) => **k = aes::Aes256::new(key.into()),
        }
    }

    /// XORs `data` with the AES counter-mode keystream starting at counter block `iv`
    /// (RFC 3711 4.1.1: the counter is the 128-bit integer `iv + i` for block `i`).
    #[inline]
    pub(crate) fn apply_keystream(&self, iv: [u8; 16], data: &mut [u8]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            AesKey::Ni128(k) => k.apply_keystream(iv, data),
            #[cfg(target_arch = "x86_64")]
            AesKey::Ni256(k) => k.apply_keystream(iv, data),
            AesKey::Soft128(k) => soft_keystream(&**k, iv, data),
            AesKey::Soft256(k) => soft_keystream(&**k, iv, data),
        }
    }
}

impl InlineAes {
    /// Expands `key` (16 or 32 bytes).
    pub(crate) fn new(key: &[u8]) -> InlineAes {
        #[cfg(target_arch = "x86_64")]
        if ni::available() {
            return match key.len() {
                16 => InlineAes::Ni128(ni::RoundKeys::expand128(key)),
                _ => InlineAes::Ni256(ni::RoundKeys::expand256(key)),
            };
        }
        match key.len() {
            16 => InlineAes::Soft128(aes::Aes128::new(key.into())),
            32 => InlineAes::Soft256(aes::Aes256::new(key.into())),
            // Only called with master keys whose lengths come from the suite table.
            n => unreachable!("AES key of {n} bytes"),
        }
    }

    /// As [`AesKey::apply_keystream`].
    pub(crate) fn apply_keystream(&self, iv: [u8; 16], data: &mut [u8]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            InlineAes::Ni128(k) => k.apply_keystream(iv, data),
            #[cfg(target_arch = "x86_64")]
            InlineAes::Ni256(k) => k.apply_keystream(iv, data),
            InlineAes::Soft128(k) => soft_keystream(k, iv, data),
            InlineAes::Soft256(k) => soft_keystream(k, iv, data),
        }
    }
}

/// Counter mode over the `aes` crate's block cipher.
fn soft_keystream<C>(cipher: &C, iv: [u8; 16], data: &mut [u8])
where
    C: BlockEncrypt + BlockSizeUser<BlockSize = U16>,
{
    let base = u128::from_be_bytes(iv);
    let mut counter: u128 = 0;
    let mut blocks = [aes::Block::default(); BLOCKS_PER_BATCH];
    for chunk in data.chunks_mut(16 * BLOCKS_PER_BATCH) {
        let n = chunk.len().div_ceil(16);
        for block in &mut blocks[..n] {
            block.copy_from_slice(&base.wrapping_add(counter).to_be_bytes());
            counter += 1;
        }
        cipher.encrypt_blocks(&mut blocks[..n]);
        for (bytes, ks) in chunk.chunks_mut(16).zip(&blocks[..n]) {
            for (b, k) in bytes.iter_mut().zip(ks.iter()) {
                *b ^= k;
            }
        }
    }
}

/// AES-NI: key expansion (FIPS 197 5.2, with `AESKEYGENASSIST`) and counter mode over eight
/// blocks at a time (`AESENC`/`AESENCLAST`).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(crate) mod ni {
    use core::arch::x86_64::{
        __m128i, _mm_aesenc_si128, _mm_aesenclast_si128, _mm_aeskeygenassist_si128,
        _mm_loadu_si128, _mm_shuffle_epi32, _mm_slli_si128, _mm_storeu_si128, _mm_xor_si128,
    };

    use zeroize::Zeroize;

    use super::BLOCKS_PER_BATCH;

    /// Whether this CPU has AES-NI (the standard library caches the answer).
    #[inline]
    pub(crate) fn available() -> bool {
        std::arch::is_x86_feature_detected!("aes")
    }

    /// The `N` round keys of AES with `N - 1` rounds (11 for AES-128, 15 for AES-256).
    ///
    /// A value exists only where [`available`] returned true: every constructor checks it, so
    /// the methods may run the AES-NI code.
    pub(crate) struct RoundKeys<const N: usize> {
        keys: [[u8; 16]; N],
    }

    impl<const N: usize> Drop for RoundKeys<N> {
        fn drop(&mut self) {
            self.keys.zeroize();
        }
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

    /// FIPS 197 5.2 for one word group: `key` XORed with its own shifts (each word with all
    /// words before it), then with the broadcast word of `assist`.
    #[target_feature(enable = "aes")]
    fn mix(key: __m128i, assist: __m128i) -> __m128i {
        let mut k = key;
        k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
        k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
        k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
        _mm_xor_si128(k, assist)
    }

    #[target_feature(enable = "aes")]
    fn expand128_ni(key: &[u8; 16], out: &mut [[u8; 16]; 11]) {
        let mut k = load(key);
        out[0] = store(k);
        macro_rules! round {
            ($i:expr, $rcon:expr) => {
                k = mix(
                    k,
                    _mm_shuffle_epi32(_mm_aeskeygenassist_si128(k, $rcon), 0xff),
                );
                out[$i] = store(k);
            };
        }
        round!(1, 0x01);
        round!(2, 0x02);
        round!(3, 0x04);
        round!(4, 0x08);
        round!(5, 0x10);
        round!(6, 0x20);
        round!(7, 0x40);
        round!(8, 0x80);
        round!(9, 0x1b);
        round!(10, 0x36);
    }

    #[target_feature(enable = "aes")]
    fn expand256_ni(key: &[u8; 32], out: &mut [[u8; 16]; 15]) {
        let (halves, _) = key.as_chunks::<16>();
        let mut a = load(&halves[0]);
        let mut b = load(&halves[1]);
        out[0] = store(a);
        out[1] = store(b);
        macro_rules! pair {
            ($i:expr, $rcon:expr) => {
                a = mix(
                    a,
                    _mm_shuffle_epi32(_mm_aeskeygenassist_si128(b, $rcon), 0xff),
                );
                out[$i] = store(a);
                b = mix(b, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(a, 0), 0xaa));
                out[$i + 1] = store(b);
            };
        }
        pair!(2, 0x01);
        pair!(4, 0x02);
        pair!(6, 0x04);
        pair!(8, 0x08);
        pair!(10, 0x10);
        pair!(12, 0x20);
        a = mix(
            a,
            _mm_shuffle_epi32(_mm_aeskeygenassist_si128(b, 0x40), 0xff),
        );
        out[14] = store(a);
    }

    /// The counter block `base + i` (RFC 3711 4.1.1: a 128-bit big-endian integer).
    #[inline(always)]
    fn counter(base: u128, i: u128) -> __m128i {
        load(&base.wrapping_add(i).to_be_bytes())
    }

    /// Encrypts one block with the round keys `rk` (`N - 1` rounds).
    #[target_feature(enable = "aes")]
    #[inline]
    fn encrypt1<const N: usize>(rk: &[__m128i; N], block: __m128i) -> __m128i {
        let mut b = _mm_xor_si128(block, rk[0]);
        for k in &rk[1..N - 1] {
            b = _mm_aesenc_si128(b, *k);
        }
        _mm_aesenclast_si128(b, rk[N - 1])
    }

    /// XORs `data` with the keystream from counter block `iv`: eight blocks at a time with
    /// the round keys in registers (the trip counts are constants, so the rounds unroll), then
    /// the remaining blocks one by one (independent, so the CPU overlaps them).
    #[target_feature(enable = "aes")]
    fn ctr_ni<const N: usize>(keys: &[[u8; 16]; N], iv: [u8; 16], data: &mut [u8]) {
        let rk: [__m128i; N] = core::array::from_fn(|i| load(&keys[i]));
        let base = u128::from_be_bytes(iv);
        let mut i: u128 = 0;
        let (full, tail) = data.as_chunks_mut::<16>();
        let mut batches = full.chunks_exact_mut(BLOCKS_PER_BATCH);
        for batch in &mut batches {
            let mut b: [__m128i; BLOCKS_PER_BATCH] =
                core::array::from_fn(|j| _mm_xor_si128(counter(base, i + j as u128), rk[0]));
            for k in &rk[1..N - 1] {
                for x in &mut b {
                    *x = _mm_aesenc_si128(*x, *k);
                }
            }
            for x in &mut b {
                *x = _mm_aesenclast_si128(*x, rk[N - 1]);
            }
            for (d, k) in batch.iter_mut().zip(&b) {
                *d = store(_mm_xor_si128(load(d), *k));
            }
            i += BLOCKS_PER_BATCH as u128;
        }
        for d in batches.into_remainder() {
            *d = store(_mm_xor_si128(load(d), encrypt1(&rk, counter(base, i))));
            i += 1;
        }
        if !tail.is_empty() {
            let ks = store(encrypt1(&rk, counter(base, i)));
            for (d, k) in tail.iter_mut().zip(&ks) {
                *d ^= k;
            }
        }
    }

    impl RoundKeys<11> {
        /// Expands a 16-byte key. The caller has checked [`available`].
        pub(crate) fn expand128(key: &[u8]) -> RoundKeys<11> {
            assert!(available(), "AES-NI round keys on a CPU without AES-NI");
            let key = key.first_chunk::<16>().expect("a 16-byte AES key");
            let mut keys = [[0u8; 16]; 11];
            // SAFETY: the CPU has AES-NI (asserted above).
            unsafe { expand128_ni(key, &mut keys) };
            RoundKeys { keys }
        }
    }

    impl RoundKeys<15> {
        /// Expands a 32-byte key. The caller has checked [`available`].
        pub(crate) fn expand256(key: &[u8]) -> RoundKeys<15> {
            assert!(available(), "AES-NI round keys on a CPU without AES-NI");
            let key = key.first_chunk::<32>().expect("a 32-byte AES key");
            let mut keys = [[0u8; 16]; 15];
            // SAFETY: the CPU has AES-NI (asserted above).
            unsafe { expand256_ni(key, &mut keys) };
            RoundKeys { keys }
        }
    }

    impl<const N: usize> RoundKeys<N> {
        /// XORs `data` with the counter-mode keystream from `iv`.
        #[inline]
        pub(crate) fn apply_keystream(&self, iv: [u8; 16], data: &mut [u8]) {
            // SAFETY: a `RoundKeys` is only built after `available()` returned true.
            unsafe { ctr_ni(&self.keys, iv, data) }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod ni {
    /// AES-NI is an x86-64 feature.
    pub(crate) fn available() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::srtp::kdf::tests::hex;
    use proptest::prelude::*;

    /// FIPS 197 C.1 and C.3: one block under AES-128 and AES-256 (a counter-mode keystream of
    /// one block from IV = plaintext is the block's encryption).
    #[test]
    fn fips197_appendix_c_blocks() {
        let plain: [u8; 16] = hex("00112233445566778899aabbccddeeff").try_into().unwrap();
        for (key, cipher) in [
            (
                "000102030405060708090a0b0c0d0e0f",
                "69c4e0d86a7b0430d8cdb78070b4c55a",
            ),
            (
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                "8ea2b7ca516745bfeafc49904b496089",
            ),
        ] {
            for use_ni in [true, false] {
                let k = AesKey::with_backend(&hex(key), use_ni);
                let mut block = [0u8; 16];
                k.apply_keystream(plain, &mut block);
                assert_eq!(block.to_vec(), hex(cipher), "key {key} ni {use_ni}");
            }
            let mut block = [0u8; 16];
            InlineAes::new(&hex(key)).apply_keystream(plain, &mut block);
            assert_eq!(block.to_vec(), hex(cipher));
        }
    }

    #[test]
    fn this_machine_uses_aes_ni_when_it_has_it() {
        let k = AesKey::new(&[1; 16]);
        #[cfg(target_arch = "x86_64")]
        if ni::available() {
            assert!(matches!(k, AesKey::Ni128(_)));
            return;
        }
        assert!(matches!(k, AesKey::Soft128(_)));
    }

    proptest! {
        /// Our AES-NI counter mode equals the `aes` crate's for any key, IV (including counter
        /// wrap past 2^128) and length, and rekeying in place equals a fresh key.
        #[test]
        fn ni_and_soft_keystreams_agree(
            key in proptest::collection::vec(any::<u8>(), 16..=16),
            key256 in proptest::collection::vec(any::<u8>(), 32..=32),
            iv in any::<[u8; 16]>(),
            near_wrap in any::<bool>(),
            len in 0usize..400,
        ) {
            let mut iv = iv;
            if near_wrap {
                iv[4..].fill(0xff);
            }
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for key in [&key, &key256] {
                let mut a = data.clone();
                let mut b = data.clone();
                AesKey::with_backend(key, true).apply_keystream(iv, &mut a);
                AesKey::with_backend(key, false).apply_keystream(iv, &mut b);
                prop_assert_eq!(&a, &b);
                let mut c = data.clone();
                let mut rekeyed = AesKey::with_backend(&[0x5a; 32][..key.len()], true);
                rekeyed.rekey(key);
                rekeyed.apply_keystream(iv, &mut c);
                prop_assert_eq!(&a, &c);
                let mut d = data.clone();
                InlineAes::new(key).apply_keystream(iv, &mut d);
                prop_assert_eq!(&a, &d);
            }
        }
    }
}
