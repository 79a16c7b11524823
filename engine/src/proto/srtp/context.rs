//! SRTP and SRTCP contexts: one per direction, holding the master keys, the derived session
//! keys and the per-SSRC state (rollover counter, replay windows, SRTCP index).
//!
//! [`SrtpOutbound`] protects, [`SrtpInbound`] unprotects. A media leg has one of each, with
//! the keys of its own direction. Both work in place on the caller's buffer and allocate only
//! when a new SSRC is first seen (after its first packet authenticated), never per packet.

use core::fmt;

use super::cipher::{self, Flow, SRTCP_E_FLAG, SessionTransform, Wiped};
use super::error::{SrtpConfigError, SrtpError};
use super::key::{MAX_MKI_LEN, MasterKey};
use super::replay::{self, ReplayCheck, ReplayWindow};
use super::roc::{estimate_index, packet_index};
use super::suite::{Suite, SuiteParams};
use crate::proto::rtp::RtpHeader;
use crate::proto::{rtcp, rtp};

/// RFC 3711 9.2: at most 2^48 SRTP packets per master key.
const RFC_MAX_RTP_PACKETS: u64 = 1 << 48;
/// RFC 3711 9.2: at most 2^31 SRTCP packets per master key.
const RFC_MAX_RTCP_PACKETS: u64 = 1 << 31;
/// Largest SRTCP index (31 bits).
const MAX_SRTCP_INDEX: u32 = 0x7fff_ffff;
/// Default number of SSRCs one context tracks.
pub const DEFAULT_MAX_SSRCS: usize = 32;

/// What a context is built from: the suite, the master key(s) and the options.
#[derive(Debug)]
pub struct SrtpPolicy {
    suite: Suite,
    keys: Vec<MasterKey>,
    replay_window: u32,
    key_derivation_rate: u32,
    max_ssrcs: usize,
    ssrcs: Option<Vec<u32>>,
}

impl SrtpPolicy {
    /// A policy for `suite` with one master key, a 128-packet replay window, no key
    /// derivation rate and any SSRC accepted (up to [`DEFAULT_MAX_SSRCS`]).
    pub fn new(suite: Suite, key: MasterKey) -> SrtpPolicy {
        SrtpPolicy {
            suite,
            keys: vec![key],
            replay_window: replay::DEFAULT_WINDOW,
            key_derivation_rate: 0,
            max_ssrcs: DEFAULT_MAX_SSRCS,
            ssrcs: None,
        }
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Checks the policy as building a context would: replay window, key derivation rate,
    /// and that every key matches the suite and carries a distinct MKI of one length.
    pub fn check(&self) -> Result<(), SrtpConfigError> {
        if !(replay::MIN_WINDOW..=replay::MAX_WINDOW).contains(&self.replay_window) {
            return Err(SrtpConfigError::ReplayWindow(self.replay_window));
        }
        let kdr = self.key_derivation_rate;
        if kdr != 0 && (!kdr.is_power_of_two() || kdr > 1 << 24) {
            return Err(SrtpConfigError::KeyDerivationRate(kdr));
        }
        let mki_len = self.keys[0].mki().len();
        for (i, key) in self.keys.iter().enumerate() {
            if key.suite() != self.suite {
                return Err(SrtpConfigError::SuiteMismatch {
                    key: key.suite(),
                    policy: self.suite,
                });
            }
            if key.mki().len() != mki_len {
                return Err(SrtpConfigError::MkiLengthMismatch);
            }
            if self.keys[..i].iter().any(|k| k.mki() == key.mki()) {
                return Err(if mki_len == 0 {
                    SrtpConfigError::MkiRequired
                } else {
                    SrtpConfigError::DuplicateMki
                });
            }
        }
        Ok(())
    }

    /// Adds another master key; every key then needs an MKI of the same length.
    pub fn with_key(mut self, key: MasterKey) -> SrtpPolicy {
        self.keys.push(key);
        self
    }

    /// Sets the replay window, 64 to 32768 packets (video with heavy reordering wants 1024 or
    /// more).
    pub fn with_replay_window(mut self, packets: u32) -> SrtpPolicy {
        self.replay_window = packets;
        self
    }

    /// Sets the key derivation rate (RFC 3711 4.3.1): 0 (derive once) or a power of two up to
    /// 2^24; session keys are derived anew every `rate` packets.
    pub fn with_key_derivation_rate(mut self, rate: u32) -> SrtpPolicy {
        self.key_derivation_rate = rate;
        self
    }

    /// Sets how many SSRCs the context tracks at most.
    pub fn with_max_ssrcs(mut self, max: usize) -> SrtpPolicy {
        self.max_ssrcs = max;
        self
    }

    /// Accepts only these SSRCs; others get [`SrtpError::UnknownSsrc`].
    pub fn with_ssrcs(mut self, ssrcs: &[u32]) -> SrtpPolicy {
        self.ssrcs = Some(ssrcs.to_vec());
        self
    }
}

/// One flow (SRTP or SRTCP) of a master key: the session keys derived for one `r`, and how
/// many packets the key has passed against its lifetime.
struct Session {
    r: u64,
    transform: Wiped<SessionTransform>,
    used: u64,
}

impl Session {
    fn new(params: &SuiteParams, master: &MasterKey, flow: Flow, r: u64) -> Session {
        Session {
            r,
            transform: Wiped::new(SessionTransform::derive(params, master, flow, r)),
            used: 0,
        }
    }
}

/// One master key with its session keys. The SRTCP keys are derived when the first RTCP
/// packet is protected or checked: a stream that never sends or receives RTCP does not hold
/// them.
struct KeySlot {
    master: MasterKey,
    rtp: Session,
    rtcp: Option<Box<Session>>,
}

impl KeySlot {
    /// Whether this key may pass another packet of `flow` (RFC 3711 9.2 and the key's
    /// lifetime).
    fn check_lifetime(&self, flow: Flow) -> Result<(), SrtpError> {
        let lifetime = self.master.lifetime().unwrap_or(u64::MAX);
        let (used, limit) = match flow {
            Flow::Rtp => (self.rtp.used, lifetime.min(RFC_MAX_RTP_PACKETS)),
            Flow::Rtcp => (
                self.rtcp.as_ref().map_or(0, |s| s.used),
                lifetime.min(RFC_MAX_RTCP_PACKETS),
            ),
        };
        if used >= limit {
            Err(SrtpError::LifetimeReached)
        } else {
            Ok(())
        }
    }

    /// Counts a packet that passed with this key.
    fn count(&mut self, flow: Flow) {
        match (flow, &mut self.rtcp) {
            (Flow::Rtp, _) => self.rtp.used += 1,
            (Flow::Rtcp, Some(s)) => s.used += 1,
            // `session` derived the keys before the packet could pass.
            (Flow::Rtcp, None) => {}
        }
    }

    /// The session of `flow` holding the keys of `r`, derived now if they are not held (the
    /// first RTCP packet, or a new `r` under a key derivation rate). Keys are replaced in
    /// place, without allocating, even if the packet then fails: they depend on `r` alone,
    /// and the next packet of another `r` derives its own.
    #[inline]
    fn session(&mut self, params: &SuiteParams, flow: Flow, r: u64) -> &SessionTransform {
        let session = match flow {
            Flow::Rtp => &mut self.rtp,
            Flow::Rtcp => self
                .rtcp
                .get_or_insert_with(|| Box::new(Session::new(params, &self.master, flow, r))),
        };
        if session.r != r {
            rederive(session, params, &self.master, flow, r);
        }
        &session.transform
    }
}

/// The slow path of [`KeySlot::session`], apart so that the common path stays small.
#[cold]
#[inline(never)]
fn rederive(session: &mut Session, params: &SuiteParams, master: &MasterKey, flow: Flow, r: u64) {
    session.transform.rederive(params, master, flow, r);
    session.r = r;
}

/// Per-SSRC state: created after the SSRC's first packet passed.
struct StreamState {
    ssrc: u32,
    /// ROC for the first RTP packet, when signalled ahead (0 by default).
    initial_roc: u32,
    /// SRTP indices seen (inbound) or used (outbound).
    rtp: Option<ReplayWindow>,
    /// SRTCP indices seen (inbound) or used (outbound).
    rtcp: Option<ReplayWindow>,
}

/// What both directions share.
struct Core {
    params: &'static SuiteParams,
    keys: Vec<KeySlot>,
    active: usize,
    mki_len: usize,
    /// log2 of the key derivation rate, `None` for rate 0.
    kdr_shift: Option<u32>,
    window: u32,
    max_ssrcs: usize,
    allowed: Option<Box<[u32]>>,
    streams: Vec<StreamState>,
    /// Position of the last stream looked up: consecutive packets usually share an SSRC.
    last: usize,
}

impl Core {
    fn new(policy: SrtpPolicy) -> Result<Core, SrtpConfigError> {
        let params = policy.suite.params();
        policy.check()?;
        let kdr = policy.key_derivation_rate;
        let mki_len = policy.keys[0].mki().len();
        let keys = policy
            .keys
            .into_iter()
            .map(|master| KeySlot {
                rtp: Session::new(params, &master, Flow::Rtp, 0),
                rtcp: None,
                master,
            })
            .collect();
        Ok(Core {
            params,
            keys,
            active: 0,
            mki_len,
            kdr_shift: (kdr != 0).then(|| kdr.trailing_zeros()),
            window: policy.replay_window,
            max_ssrcs: policy.max_ssrcs,
            allowed: policy.ssrcs.map(Vec::into_boxed_slice),
            streams: Vec::new(),
            last: 0,
        })
    }

    fn find_stream(&mut self, ssrc: u32) -> Option<usize> {
        if self.streams.get(self.last).is_some_and(|s| s.ssrc == ssrc) {
            return Some(self.last);
        }
        let i = self.streams.iter().position(|s| s.ssrc == ssrc)?;
        self.last = i;
        Some(i)
    }

    /// The stream of `ssrc` if the context has one; otherwise checks that the SSRC may get
    /// state (which is created only after its packet passed).
    fn lookup(&mut self, ssrc: u32) -> Result<Option<usize>, SrtpError> {
        let found = self.find_stream(ssrc);
        if found.is_none() {
            self.admit(ssrc)?;
        }
        Ok(found)
    }

    /// Whether a new SSRC may get state.
    fn admit(&self, ssrc: u32) -> Result<(), SrtpError> {
        let allowed = self.allowed.as_ref().is_none_or(|a| a.contains(&ssrc));
        if allowed && self.streams.len() < self.max_ssrcs {
            Ok(())
        } else {
            Err(SrtpError::UnknownSsrc { ssrc })
        }
    }

    /// The stream for `ssrc`, created after a packet passed.
    fn stream_mut(&mut self, found: Option<usize>, ssrc: u32) -> &mut StreamState {
        let i = match found {
            Some(i) => i,
            None => {
                // Most contexts see one SSRC: no room for four.
                self.streams.reserve_exact(1);
                self.streams.push(StreamState {
                    ssrc,
                    initial_roc: 0,
                    rtp: None,
                    rtcp: None,
                });
                self.streams.len() - 1
            }
        };
        self.last = i;
        &mut self.streams[i]
    }

    /// The MKI of the key new packets are protected with, copied out so that the packet
    /// transform can borrow the context mutably.
    fn active_mki(&self) -> ([u8; MAX_MKI_LEN], usize) {
        let mut mki = [0u8; MAX_MKI_LEN];
        mki[..self.mki_len].copy_from_slice(self.keys[self.active].master.mki());
        (mki, self.mki_len)
    }

    /// The key slot named by the MKI of a protected packet.
    fn slot_for_mki(&self, mki: &[u8]) -> Result<usize, SrtpError> {
        if self.mki_len == 0 {
            return Ok(0);
        }
        self.keys
            .iter()
            .position(|k| k.master.mki() == mki)
            .ok_or(SrtpError::UnknownMki)
    }

    /// The RTP index of a packet with `seq` on stream `found`.
    fn rtp_index(&self, found: Option<usize>, seq: u16) -> Result<(u64, ReplayCheck), SrtpError> {
        let stream = found.map(|i| &self.streams[i]);
        match stream.and_then(|s| s.rtp.as_ref()) {
            Some(w) => {
                let index = estimate_index(w.highest(), seq).ok_or(SrtpError::RocAmbiguous)?;
                Ok((index, w.check(index)))
            }
            None => {
                let roc = stream.map_or(0, |s| s.initial_roc);
                Ok((packet_index(roc, seq), ReplayCheck::Ahead))
            }
        }
    }

    /// Runs `f` with the session keys of `flow` for packet index `index` of key `slot`
    /// (deriving them for a new `r` when a key derivation rate is set), and counts the packet
    /// against the key's lifetime if `f` succeeded.
    #[inline]
    fn with_session<R>(
        &mut self,
        slot: usize,
        flow: Flow,
        index: u64,
        f: impl FnOnce(&SessionTransform) -> Result<R, SrtpError>,
    ) -> Result<R, SrtpError> {
        let r = self.kdr_shift.map_or(0, |shift| index >> shift);
        let slot = &mut self.keys[slot];
        let out = f(slot.session(self.params, flow, r))?;
        slot.count(flow);
        Ok(out)
    }

    fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = packet_in(buf, len)?;
        let header = RtpHeader::parse(packet).map_err(malformed)?;
        let tag_len = self.params.rtp_tag_len;
        let needed = len + self.mki_len + tag_len;
        if buf.len() < needed {
            return Err(SrtpError::BufferTooSmall {
                needed,
                capacity: buf.len(),
            });
        }
        let found = self.lookup(header.ssrc)?;
        let (index, check) = self.rtp_index(found, header.seq)?;
        if !check.is_fresh() {
            return Err(SrtpError::IndexReused { index });
        }
        let slot = self.active;
        self.keys[slot].check_lifetime(Flow::Rtp)?;
        let (mki, mki_len) = self.active_mki();
        let mki = &mki[..mki_len];
        let out = self.with_session(slot, Flow::Rtp, index, |t| {
            Ok(t.seal_rtp(buf, header.len, len, header.ssrc, index, mki))
        })?;
        self.commit_rtp(found, header.ssrc, index);
        Ok(out)
    }

    fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = packet_in(buf, len)?;
        let tag_len = self.params.rtp_tag_len;
        let trailer = self.mki_len + tag_len;
        let min = rtp::FIXED_HEADER_LEN + trailer;
        if len < min {
            return Err(SrtpError::TooShort { len, min });
        }
        let header = RtpHeader::parse(&packet[..len - trailer]).map_err(malformed)?;
        let mki_at = cipher::mki_offset(self.params.cipher, len, tag_len, self.mki_len);
        let slot = self.slot_for_mki(&packet[mki_at..mki_at + self.mki_len])?;
        let found = self.lookup(header.ssrc)?;
        let (index, check) = self.rtp_index(found, header.seq)?;
        if !check.is_fresh() {
            return Err(SrtpError::Replayed { index });
        }
        self.keys[slot].check_lifetime(Flow::Rtp)?;
        let mki_len = self.mki_len;
        let out = self.with_session(slot, Flow::Rtp, index, |t| {
            t.open_rtp(buf, header.len, len, header.ssrc, index, mki_len)
        })?;
        self.commit_rtp(found, header.ssrc, index);
        Ok(out)
    }

    fn commit_rtp(&mut self, found: Option<usize>, ssrc: u32, index: u64) {
        let window = self.window;
        let stream = self.stream_mut(found, ssrc);
        match &mut stream.rtp {
            Some(w) => w.accept(index),
            None => stream.rtp = Some(ReplayWindow::new(window, index)),
        }
    }

    fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = packet_in(buf, len)?;
        let ssrc = rtcp::sender_ssrc(packet).map_err(malformed)?;
        let tag_len = self.params.rtcp_tag_len;
        let needed = len + 4 + self.mki_len + tag_len;
        if buf.len() < needed {
            return Err(SrtpError::BufferTooSmall {
                needed,
                capacity: buf.len(),
            });
        }
        let found = self.lookup(ssrc)?;
        let next = found
            .and_then(|i| self.streams[i].rtcp.as_ref())
            .map_or(0, |w| w.highest() + 1);
        let slot = self.active;
        if next > u64::from(MAX_SRTCP_INDEX) {
            return Err(SrtpError::LifetimeReached);
        }
        self.keys[slot].check_lifetime(Flow::Rtcp)?;
        let index = next as u32;
        let (mki, mki_len) = self.active_mki();
        let mki = &mki[..mki_len];
        let out = self.with_session(slot, Flow::Rtcp, next, |t| {
            Ok(t.seal_rtcp(buf, len, ssrc, index, mki))
        })?;
        self.commit_rtcp(found, ssrc, next);
        Ok(out)
    }

    fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = packet_in(buf, len)?;
        let tag_len = self.params.rtcp_tag_len;
        let trailer = 4 + self.mki_len + tag_len;
        let min = rtcp::HEADER_LEN + trailer;
        if len < min {
            return Err(SrtpError::TooShort { len, min });
        }
        let ssrc = rtcp::sender_ssrc(packet).map_err(malformed)?;
        let kind = self.params.cipher;
        let index_at = cipher::srtcp_index_offset(kind, len, tag_len, self.mki_len);
        let e_index = u32::from_be_bytes([
            packet[index_at],
            packet[index_at + 1],
            packet[index_at + 2],
            packet[index_at + 3],
        ]);
        let index = u64::from(e_index & !SRTCP_E_FLAG);
        let mki_at = cipher::mki_offset(kind, len, tag_len, self.mki_len);
        let slot = self.slot_for_mki(&packet[mki_at..mki_at + self.mki_len])?;
        let found = self.lookup(ssrc)?;
        let check = found
            .and_then(|i| self.streams[i].rtcp.as_ref())
            .map_or(ReplayCheck::Ahead, |w| w.check(index));
        if !check.is_fresh() {
            return Err(SrtpError::Replayed { index });
        }
        self.keys[slot].check_lifetime(Flow::Rtcp)?;
        let mki_len = self.mki_len;
        let out = self.with_session(slot, Flow::Rtcp, index, |t| {
            t.open_rtcp(buf, len, ssrc, e_index, mki_len)
        })?;
        self.commit_rtcp(found, ssrc, index);
        Ok(out)
    }

    fn commit_rtcp(&mut self, found: Option<usize>, ssrc: u32, index: u64) {
        let window = self.window;
        let stream = self.stream_mut(found, ssrc);
        match &mut stream.rtcp {
            Some(w) => w.accept(index),
            None => stream.rtcp = Some(ReplayWindow::new(window, index)),
        }
    }

    fn set_roc(&mut self, ssrc: u32, roc: u32) -> Result<(), SrtpError> {
        let found = self.lookup(ssrc)?;
        let stream = self.stream_mut(found, ssrc);
        stream.initial_roc = roc;
        stream.rtp = None;
        Ok(())
    }

    fn roc(&self, ssrc: u32) -> Option<u32> {
        let s = self.streams.iter().find(|s| s.ssrc == ssrc)?;
        Some(
            s.rtp
                .as_ref()
                .map_or(s.initial_roc, |w| super::roc::roc_of(w.highest())),
        )
    }

    fn set_active_key(&mut self, index: usize) -> Result<(), SrtpConfigError> {
        if index >= self.keys.len() {
            return Err(SrtpConfigError::NoSuchKey(index));
        }
        self.active = index;
        Ok(())
    }

    fn fmt_debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("suite", &self.params.suite)
            .field("keys", &self.keys.len())
            .field("mki_len", &self.mki_len)
            .field("ssrcs", &self.streams.len())
            .finish_non_exhaustive()
    }
}

/// The packet `buf[..len]`, or the caller's mistake of a length past its buffer.
fn packet_in(buf: &[u8], len: usize) -> Result<&[u8], SrtpError> {
    buf.get(..len).ok_or(SrtpError::BufferTooSmall {
        needed: len,
        capacity: buf.len(),
    })
}

fn malformed(e: rtp::HeaderError) -> SrtpError {
    SrtpError::Malformed(e.as_str())
}

/// One packet of a batch: a buffer, the packet's length in it, and after the call the outcome.
/// On success `len` is the new length.
#[derive(Debug)]
pub struct BatchPacket<'a> {
    /// The buffer holding the packet, with room for the trailer when protecting.
    pub buf: &'a mut [u8],
    /// The packet's length; updated on success.
    pub len: usize,
    /// The outcome of the last batch call.
    pub result: Result<(), SrtpError>,
}

impl<'a> BatchPacket<'a> {
    /// A packet of `len` bytes at the start of `buf`.
    pub fn new(buf: &'a mut [u8], len: usize) -> BatchPacket<'a> {
        BatchPacket {
            buf,
            len,
            result: Ok(()),
        }
    }
}

fn run_batch(
    packets: &mut [BatchPacket<'_>],
    mut op: impl FnMut(&mut [u8], usize) -> Result<usize, SrtpError>,
) -> usize {
    let mut ok = 0;
    for p in packets {
        p.result = op(p.buf, p.len).map(|len| {
            p.len = len;
            ok += 1;
        });
    }
    ok
}

macro_rules! common_methods {
    () => {
        /// Builds the context, deriving the session keys of every master key.
        pub fn new(policy: SrtpPolicy) -> Result<Self, SrtpConfigError> {
            Ok(Self {
                core: Core::new(policy)?,
            })
        }

        /// The suite.
        pub fn suite(&self) -> Suite {
            self.core.params.suite
        }

        /// Sets the rollover counter of `ssrc` for its next RTP packet (a ROC signalled out of
        /// band, e.g. when a stream continues under new keys). Forgets the stream's SRTP
        /// replay state.
        pub fn set_roc(&mut self, ssrc: u32, roc: u32) -> Result<(), SrtpError> {
            self.core.set_roc(ssrc, roc)
        }

        /// The rollover counter of `ssrc`, if the context knows the SSRC.
        pub fn roc(&self, ssrc: u32) -> Option<u32> {
            self.core.roc(ssrc)
        }

        /// Number of SSRCs the context tracks.
        pub fn ssrc_count(&self) -> usize {
            self.core.streams.len()
        }
    };
}

/// Protects outgoing RTP and RTCP packets.
pub struct SrtpOutbound {
    core: Core,
}

impl SrtpOutbound {
    common_methods!();

    /// Chooses the master key new packets are protected with (by position in the policy), as
    /// a rekey with MKI does.
    pub fn set_active_key(&mut self, index: usize) -> Result<(), SrtpConfigError> {
        self.core.set_active_key(index)
    }

    /// Encrypts and authenticates the RTP packet `buf[..len]` in place; returns the SRTP
    /// packet's length. `buf` needs room for the MKI and tag after the packet.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.core.protect_rtp(buf, len)
    }

    /// Encrypts and authenticates the RTCP packet `buf[..len]` in place; returns the SRTCP
    /// packet's length. `buf` needs room for the SRTCP index, MKI and tag.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.core.protect_rtcp(buf, len)
    }

    /// Protects a batch of RTP packets; returns how many succeeded. Each packet's outcome is
    /// in its `result`.
    pub fn protect_rtp_batch(&mut self, packets: &mut [BatchPacket<'_>]) -> usize {
        run_batch(packets, |buf, len| self.core.protect_rtp(buf, len))
    }

    /// Protects a batch of RTCP packets; returns how many succeeded.
    pub fn protect_rtcp_batch(&mut self, packets: &mut [BatchPacket<'_>]) -> usize {
        run_batch(packets, |buf, len| self.core.protect_rtcp(buf, len))
    }
}

/// Verifies and decrypts incoming SRTP and SRTCP packets.
pub struct SrtpInbound {
    core: Core,
}

impl SrtpInbound {
    common_methods!();

    /// Verifies and decrypts the SRTP packet `buf[..len]` in place; returns the RTP packet's
    /// length. State (ROC, replay window) changes only if the packet authenticated.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.core.unprotect_rtp(buf, len)
    }

    /// Verifies and decrypts the SRTCP packet `buf[..len]` in place; returns the RTCP
    /// packet's length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.core.unprotect_rtcp(buf, len)
    }

    /// Unprotects a batch of SRTP packets; returns how many succeeded.
    pub fn unprotect_rtp_batch(&mut self, packets: &mut [BatchPacket<'_>]) -> usize {
        run_batch(packets, |buf, len| self.core.unprotect_rtp(buf, len))
    }

    /// Unprotects a batch of SRTCP packets; returns how many succeeded.
    pub fn unprotect_rtcp_batch(&mut self, packets: &mut [BatchPacket<'_>]) -> usize {
        run_batch(packets, |buf, len| self.core.unprotect_rtcp(buf, len))
    }
}

impl fmt::Debug for SrtpOutbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt_debug("SrtpOutbound", f)
    }
}

impl fmt::Debug for SrtpInbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt_debug("SrtpInbound", f)
    }
}
