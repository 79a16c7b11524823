//! The per-packet path never allocates: a counting global allocator watches protect and
//! unprotect (single and batch, success and every failure a peer can cause) for every suite.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use srtp_engine::proto::srtp::{
    BatchPacket, MasterKey, SrtpError, SrtpInbound, SrtpOutbound, SrtpPolicy, Suite,
};

/// Counts allocations made by the current thread (the test harness's other threads allocate
/// too, and must not disturb the count).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn write_rtp(buf: &mut [u8], seq: u16, ssrc: u32, payload: usize) -> usize {
    buf[0] = 0x80;
    buf[1] = 0x00;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    for (i, b) in buf[12..12 + payload].iter_mut().enumerate() {
        *b = i as u8;
    }
    12 + payload
}

fn write_rtcp(buf: &mut [u8], ssrc: u32) -> usize {
    buf[..4].copy_from_slice(&[0x80, 0xc9, 0x00, 0x01]);
    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
    8
}

#[test]
fn protect_and_unprotect_never_allocate() {
    for suite in Suite::ALL {
        let key = || MasterKey::new(suite, &vec![0x3c; suite.master_len()]).unwrap();
        let policy = || {
            SrtpPolicy::new(suite, key().with_mki(&[1, 2]).unwrap())
                .with_key(key().with_mki(&[3, 4]).unwrap())
                .with_key_derivation_rate(1 << 10)
        };
        let mut tx = SrtpOutbound::new(policy()).unwrap();
        let mut rx = SrtpInbound::new(policy()).unwrap();
        let mut buf = [0u8; 1500];
        let ssrc = 0xabcd_0001;

        // Warm up: the first packet of an SSRC creates its state, and the first SRTCP packet
        // under each master key derives that key's SRTCP keys (allowed to allocate: once per
        // SSRC and key, not per packet).
        let len = write_rtp(&mut buf, 65_000, ssrc, 160);
        let len = tx.protect_rtp(&mut buf, len).unwrap();
        rx.unprotect_rtp(&mut buf, len).unwrap();
        for key in [1, 0] {
            tx.set_active_key(key).unwrap();
            let len = write_rtcp(&mut buf, ssrc);
            let len = tx.protect_rtcp(&mut buf, len).unwrap();
            rx.unprotect_rtcp(&mut buf, len).unwrap();
        }

        let before = allocations();
        // 3,000 packets: crosses the sequence number wrap and two key derivation periods.
        for i in 1..3_000u16 {
            let seq = 65_000u16.wrapping_add(i);
            let payload = [160, 1200, 0, 33][usize::from(i) % 4];
            let len = write_rtp(&mut buf, seq, ssrc, payload);
            let len = tx.protect_rtp(&mut buf, len).unwrap();
            if i % 7 == 0 {
                // A tampered packet, then a replay: counted errors, no allocation.
                let mut tampered = buf;
                tampered[1] ^= 1;
                assert_eq!(
                    rx.unprotect_rtp(&mut tampered, len),
                    Err(SrtpError::AuthFailed)
                );
            }
            let mut copy = buf;
            rx.unprotect_rtp(&mut buf, len).unwrap();
            assert!(matches!(
                rx.unprotect_rtp(&mut copy, len),
                Err(SrtpError::Replayed { .. })
            ));
            if i % 50 == 0 {
                let len = write_rtcp(&mut buf, ssrc);
                let len = tx.protect_rtcp(&mut buf, len).unwrap();
                rx.unprotect_rtcp(&mut buf, len).unwrap();
            }
            if i == 1500 {
                tx.set_active_key(1).unwrap();
            }
        }
        // Garbage of every short length.
        for n in 0..64 {
            let _ = rx.unprotect_rtp(&mut buf, n);
            let _ = rx.unprotect_rtcp(&mut buf, n);
        }

        // A batch of 16.
        let mut storage = [[0u8; 256]; 16];
        let mut lens = [0usize; 16];
        for (i, (b, l)) in storage.iter_mut().zip(&mut lens).enumerate() {
            *l = write_rtp(b, 4_000 + i as u16, ssrc, 160);
        }
        let mut batch: [BatchPacket<'_>; 16] = {
            let mut it = storage.iter_mut().zip(lens);
            std::array::from_fn(|_| {
                let (b, l) = it.next().unwrap();
                BatchPacket::new(b, l)
            })
        };
        let batch_start = allocations();
        assert_eq!(tx.protect_rtp_batch(&mut batch), 16);
        assert_eq!(rx.unprotect_rtp_batch(&mut batch), 16);
        let after = allocations();
        assert_eq!(after - batch_start, 0, "{suite}: batch path allocated");
        assert_eq!(after - before, 0, "{suite}: per-packet path allocated");
    }
}
