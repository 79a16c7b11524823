//! The io_uring backend.
//!
//! - The ring is created with `SINGLE_ISSUER | DEFER_TASKRUN` (completion work runs only when
//!   this thread enters the kernel, in one batch) and `TASKRUN_FLAG` (the kernel flags the
//!   work it still holds, so a turn that must not wait still runs it, and a turn that is
//!   behind on its timers enters again while some is left, a bounded number of times); its
//!   fd is registered.
//! - Sockets are registered files; each has one multishot `RECVMSG` armed, drawing buffers from
//!   one provided-buffer ring. A datagram's buffer is the receive buffer, the processing buffer
//!   and, for echo and relay, the send buffer: it returns to the ring when its send completes.
//! - Sends are `SEND` SQEs (with a destination only for unconnected sockets), all submitted
//!   with the next wait: one `io_uring_enter` per loop turn.
//! - A wait asks for a batch of completions but only for `batch_wait_us`, then returns on the
//!   first (`min_wait_usec`, Linux 6.12; older kernels return on the first completion).

#![allow(unsafe_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fixed, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

use super::addr::{RawAddr, parse_sockaddr};
use super::backend::{
    BUF_SIZE, BackendKind, DROP_CMSG_SPACE, DropTracker, Io, IoConfig, IoStats, RxMeta, SockId,
    rxq_ovfl,
};

/// `io_uring_enter` flag (linux/io_uring.h): run deferred task work and post completions.
const IORING_ENTER_GETEVENTS: u32 = 0x01;
const BUF_GROUP: u16 = 0;
/// Most extra enters one turn makes to run pending receive work (see `run_pending_work`).
const MAX_DRAIN_ENTERS: u32 = 8;

const KIND_RECV: u64 = 1;
const KIND_SEND_RX: u64 = 2;
const KIND_SEND_TX: u64 = 3;
const KIND_CANCEL: u64 = 4;

/// user_data: kind (8 bits) | generation (16) | socket slot (24) | buffer or send slot (16).
fn user_data(kind: u64, gen_: u16, sock: u32, extra: u16) -> u64 {
    kind << 56 | u64::from(gen_) << 40 | u64::from(sock & 0xff_ffff) << 16 | u64::from(extra)
}

fn split_user_data(ud: u64) -> (u64, u16, u32, u16) {
    (
        ud >> 56,
        (ud >> 40) as u16,
        ((ud >> 16) & 0xff_ffff) as u32,
        ud as u16,
    )
}

/// Page-aligned memory owned through a raw pointer: the kernel reads and writes it while we
/// hold no Rust reference to the whole region.
struct RawRegion {
    ptr: *mut u8,
    layout: Layout,
}

impl RawRegion {
    fn new(len: usize) -> io::Result<RawRegion> {
        let layout = Layout::from_size_align(len.max(4096), 4096)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer pool too large"))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "buffer pool allocation failed",
            ));
        }
        // Fault every page in now: the pool's memory is resident from the start, so traffic
        // ramping up takes no page faults on the packet path, and the worker's footprint
        // does not creep with load (the memory benchmark reads per-stream growth on top).
        for offset in (0..layout.size()).step_by(4096) {
            // SAFETY: `offset` lies inside the allocation just made; nothing else uses it yet.
            unsafe { ptr.add(offset).write_volatile(0) };
        }
        Ok(RawRegion { ptr, layout })
    }
}

impl Drop for RawRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring that used it is gone (UringIo
        // declares the ring first, so it drops first).
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// The provided-buffer ring: `entries` buffers of [`BUF_SIZE`] and the ring that lends them to
/// the kernel.
struct BufRing {
    ring: RawRegion,
    bufs: RawRegion,
    entries: u16,
    tail: u16,
}

impl BufRing {
    fn new(entries: u16) -> io::Result<BufRing> {
        let ring = RawRegion::new(usize::from(entries) * std::mem::size_of::<BufRingEntry>())?;
        let bufs = RawRegion::new(usize::from(entries) * BUF_SIZE)?;
        let mut br = BufRing {
            ring,
            bufs,
            entries,
            tail: 0,
        };
        for bid in 0..entries {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < entries, so the offset stays inside the allocation.
        unsafe { self.bufs.ptr.add(usize::from(bid) * BUF_SIZE) }
    }

    /// Lends buffer `bid` back to the kernel (visible after `publish`).
    fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        // SAFETY: idx < entries; the entry is ours to write until the tail is published past it.
        unsafe {
            let entry = &mut *(self.ring.ptr as *mut BufRingEntry).add(idx);
            entry.set_addr(self.buf_ptr(bid) as u64);
            entry.set_len(BUF_SIZE as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of the ring we allocated; the kernel
        // reads it concurrently, hence the atomic release store.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.ptr as *const BufRingEntry) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

struct SockSlot {
    sock: Option<UdpSocket>,
    gen_: u16,
}

#[derive(Clone, Copy)]
struct RxEntry {
    meta: RxMeta,
    bid: u16,
    offset: u16,
    sent: bool,
}

/// The send-buffer pool: buffers built by the worker (generated packets, RTCP).
struct TxPool {
    mem: RawRegion,
    free: Vec<u16>,
    addr: Vec<RawAddr>,
    current: Option<u16>,
}

/// The io_uring backend. See the module docs.
pub struct UringIo {
    // Field order matters: the ring drops (and stops using the buffers) before the memory.
    ring: IoUring,
    bufs: BufRing,
    tx: TxPool,
    /// Destination of each receive buffer while it is being sent on.
    rx_addr: Vec<RawAddr>,
    msghdr: Box<libc::msghdr>,
    socks: Vec<SockSlot>,
    free_socks: Vec<u32>,
    /// Slots of removed sockets, reusable once the SQEs queued before the removal are
    /// submitted: a queued send names its socket by slot, and a new socket in that slot
    /// would carry the old stream's packet to the new stream's peer.
    released: Vec<u32>,
    rearm: Vec<u32>,
    batch: Vec<RxEntry>,
    scratch: Vec<(u64, i32, u32)>,
    /// Completions taken out of the ring by `flush_sends` that are not sends (receives): they
    /// wait for the next `reap`, so that the batch in hand does not grow mid-turn.
    deferred: Vec<(u64, i32, u32)>,
    drops: DropTracker,
    config: IoConfig,
    min_wait: bool,
    stats: IoStats,
}

impl UringIo {
    /// Sets up the ring, the buffer ring and the registered file table.
    pub fn new(config: IoConfig) -> io::Result<UringIo> {
        let rx_entries = config
            .rx_buffers
            .clamp(64, 32_768)
            .next_power_of_two()
            .min(32_768) as u16;
        let tx_entries = config.tx_buffers.clamp(16, 65_535) as u16;
        let sq = 4096u32;
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_submit_all()
            .setup_cqsize(32_768)
            .build(sq)?;
        ring.submitter().register_ring_fd()?;
        let max_files = config
            .max_sockets
            .min(super::socket::nofile_limit().0 as u32)
            .max(16);
        ring.submitter().register_files_sparse(max_files)?;
        let bufs = BufRing::new(rx_entries)?;
        // SAFETY: the ring memory is page aligned, holds `rx_entries` entries and lives as long
        // as the ring (field order).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring.ptr as u64,
                rx_entries,
                BUF_GROUP,
                0,
            )?;
        }
        let min_wait = ring.params().is_feature_min_timeout();
        // SAFETY: a zeroed msghdr is valid; only the name and control lengths are read by the
        // kernel for a multishot recvmsg.
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
        msghdr.msg_controllen = DROP_CMSG_SPACE;
        let tx = TxPool {
            mem: RawRegion::new(usize::from(tx_entries) * BUF_SIZE)?,
            free: (0..tx_entries).rev().collect(),
            addr: vec![RawAddr::zeroed(); usize::from(tx_entries)],
            current: None,
        };
        Ok(UringIo {
            ring,
            bufs,
            tx,
            rx_addr: vec![RawAddr::zeroed(); usize::from(rx_entries)],
            msghdr,
            socks: Vec::new(),
            free_socks: Vec::new(),
            released: Vec::new(),
            rearm: Vec::new(),
            batch: Vec::with_capacity(usize::from(rx_entries)),
            scratch: Vec::with_capacity(32_768),
            deferred: Vec::new(),
            drops: DropTracker::default(),
            config: IoConfig {
                max_sockets: max_files,
                ..config
            },
            min_wait,
            stats: IoStats::default(),
        })
    }

    /// Pushes an SQE, submitting first if the queue is full.
    fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every buffer, msghdr and address an SQE points to is owned by `self`
            // and stays put until its completion has been reaped.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            self.stats.syscalls += 1;
            if self.ring.submit().is_err() {
                // Nothing more can be done this turn; the caller's packet is lost and counted.
                self.stats.tx_errors += 1;
                return;
            }
        }
    }

    fn arm(&mut self, slot: u32) {
        let gen_ = self.socks[slot as usize].gen_;
        let sqe = opcode::RecvMsgMulti::new(Fixed(slot), &*self.msghdr, BUF_GROUP)
            .build()
            .user_data(user_data(KIND_RECV, gen_, slot, 0));
        self.push(sqe);
    }

    /// Queues a send of `len` bytes at `ptr`; `to` is a kernel address that stays put until
    /// the SQE is submitted (the kernel copies it when it prepares the send).
    fn send(
        &mut self,
        sock: SockId,
        ptr: *const u8,
        len: usize,
        to: Option<(*const libc::sockaddr, u32)>,
        ud: u64,
    ) {
        let mut op = opcode::Send::new(Fixed(sock), ptr, len as u32);
        if let Some((addr, addr_len)) = to {
            op = op.dest_addr(addr).dest_addr_len(addr_len);
        }
        self.push(op.build().user_data(ud));
        self.stats.tx_packets += 1;
    }

    /// A send finished: its buffer goes back to its pool (a receive buffer for an in-place
    /// echo, a send buffer otherwise). Returns whether a receive buffer was returned (the
    /// ring then needs publishing).
    fn complete_send(&mut self, kind: u64, res: i32, buf: u16) -> bool {
        if res < 0 {
            self.stats.tx_errors += 1;
        }
        if kind == KIND_SEND_RX {
            self.bufs.push(buf);
            true
        } else {
            self.tx.free.push(buf);
            false
        }
    }

    /// Socket slots removed before the last submission become reusable once nothing queued
    /// refers to them.
    fn release_slots(&mut self) {
        if !self.released.is_empty() && self.ring.submission().is_empty() {
            self.free_socks.append(&mut self.released);
        }
    }

    /// Runs receive work the kernel still holds after this turn's enter. One enter runs at
    /// most about 40 deferred task-work items (the kernel's `IO_LOCAL_TW_DEFAULT_MAX`, 20 per
    /// pass), and each item is one socket's multishot receive, often a single datagram. A
    /// worker with thousands of sockets whose timers keep it busy would then receive only
    /// that much per turn: its sockets' backlog grows, turns grow longer, and receiving
    /// collapses while sending goes on (the soak bench saw the generator's receive rate fall
    /// to 10,000/s against 100,000 arriving). While the kernel flags work pending
    /// (`IORING_SQ_TASKRUN`), enter again without waiting, at most `MAX_DRAIN_ENTERS` times:
    /// enough to keep up, bounded so that one turn's batch stays cache-sized. Only turns that
    /// are behind do this: in the echo bench, draining on every turn cost about 11% more CPU
    /// per packet and 50% more syscalls (docs/performance.md).
    fn run_pending_work(&mut self) {
        for _ in 0..MAX_DRAIN_ENTERS {
            if !self.ring.submission().taskrun() {
                break;
            }
            self.stats.syscalls += 1;
            // SAFETY: nothing is submitted (to_submit 0); GETEVENTS with min_complete 0 never
            // blocks, it only runs deferred task work so that completions are posted.
            let _ = unsafe {
                self.ring
                    .submitter()
                    .enter::<libc::sigset_t>(0, 0, IORING_ENTER_GETEVENTS, None)
            };
        }
    }

    /// Every send buffer is in flight: submit the queued sends now and take their completions
    /// (UDP sends complete at submission), so generation can go on within this turn instead of
    /// dropping packets. Receive completions found on the way are kept for the next `reap`.
    fn flush_sends(&mut self) {
        self.stats.syscalls += 1;
        let to_submit = self.ring.submission().len() as u32;
        // SAFETY: no SQE is in the queue whose memory is not owned by `self` (buffers and
        // addresses live in the pools); GETEVENTS with min_complete 0 never blocks, it only
        // runs deferred task work so that completions are posted.
        let _ = unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(
                to_submit,
                0,
                IORING_ENTER_GETEVENTS,
                None,
            )
        };
        self.release_slots();
        let mut returned = false;
        let mut cqes = std::mem::take(&mut self.deferred);
        let kept = cqes.len();
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let mut keep = kept;
        for i in kept..cqes.len() {
            let (ud, res, _) = cqes[i];
            let (kind, _, _, extra) = split_user_data(ud);
            match kind {
                KIND_SEND_TX | KIND_SEND_RX => returned |= self.complete_send(kind, res, extra),
                _ => {
                    cqes[keep] = cqes[i];
                    keep += 1;
                }
            }
        }
        cqes.truncate(keep);
        self.deferred = cqes;
        if returned {
            self.bufs.publish();
        }
    }

    fn reap(&mut self) {
        let mut returned = false;
        // Copy the completions out first (a reused vector): handling them needs `&mut self`.
        let mut pending = std::mem::take(&mut self.scratch);
        pending.append(&mut self.deferred);
        pending.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &pending {
            let (kind, gen_, slot, extra) = split_user_data(ud);
            match kind {
                KIND_RECV => {
                    let bid = cqueue::buffer_select(flags);
                    let live = self
                        .socks
                        .get(slot as usize)
                        .is_some_and(|s| s.gen_ == gen_ && s.sock.is_some());
                    if live && !cqueue::more(flags) {
                        self.rearm.push(slot);
                    }
                    if res < 0 {
                        if -res == libc::ENOBUFS {
                            self.stats.rx_no_buffer += 1;
                        } else if -res != libc::ECANCELED {
                            self.stats.rx_errors += 1;
                        }
                    }
                    let Some(bid) = bid else { continue };
                    if res < 0 || !live {
                        self.bufs.push(bid);
                        returned = true;
                        continue;
                    }
                    // SAFETY: the kernel wrote `res` bytes into buffer `bid`, which is ours
                    // until we push it back.
                    let buf =
                        unsafe { std::slice::from_raw_parts(self.bufs.buf_ptr(bid), res as usize) };
                    let parsed = RecvMsgOut::parse(buf, &self.msghdr).ok().and_then(|m| {
                        if let Some(total) = rxq_ovfl(m.control_data()) {
                            self.stats.kernel_drops += self.drops.update(slot, total);
                        }
                        let from = parse_sockaddr(m.name_data())?;
                        let offset = buf.len() - m.payload_data().len();
                        Some((
                            from,
                            offset,
                            m.payload_data().len(),
                            m.is_payload_truncated(),
                        ))
                    });
                    match parsed {
                        Some((from, offset, len, false)) => {
                            self.stats.rx_packets += 1;
                            self.batch.push(RxEntry {
                                meta: RxMeta {
                                    sock: slot,
                                    from,
                                    len,
                                },
                                bid,
                                offset: offset as u16,
                                sent: false,
                            });
                        }
                        Some((_, _, _, true)) => {
                            self.stats.rx_truncated += 1;
                            self.bufs.push(bid);
                            returned = true;
                        }
                        None => {
                            self.stats.rx_errors += 1;
                            self.bufs.push(bid);
                            returned = true;
                        }
                    }
                }
                KIND_SEND_TX | KIND_SEND_RX => returned |= self.complete_send(kind, res, extra),
                _ => {}
            }
        }
        pending.clear();
        self.scratch = pending;
        if returned {
            self.bufs.publish();
        }
    }
}

impl Io for UringIo {
    fn kind(&self) -> BackendKind {
        BackendKind::IoUring
    }

    fn add_socket(&mut self, sock: UdpSocket) -> io::Result<SockId> {
        let slot = match self.free_socks.pop() {
            Some(s) => s,
            None => {
                let s = self.socks.len() as u32;
                if s >= self.config.max_sockets {
                    return Err(io::Error::new(
                        io::ErrorKind::OutOfMemory,
                        format!(
                            "io_uring file table full ({} sockets)",
                            self.config.max_sockets
                        ),
                    ));
                }
                self.socks.push(SockSlot {
                    sock: None,
                    gen_: 0,
                });
                s
            }
        };
        self.stats.syscalls += 1;
        if let Err(e) = self
            .ring
            .submitter()
            .register_files_update(slot, &[sock.as_raw_fd()])
        {
            self.free_socks.push(slot);
            return Err(e);
        }
        self.socks[slot as usize].sock = Some(sock);
        self.drops.reset(slot);
        self.arm(slot);
        Ok(slot)
    }

    fn remove_socket(&mut self, id: SockId) {
        let Some(s) = self.socks.get_mut(id as usize) else {
            return;
        };
        if s.sock.is_none() {
            return;
        }
        let gen_ = s.gen_;
        s.gen_ = s.gen_.wrapping_add(1);
        let sock = s.sock.take();
        let cancel = opcode::AsyncCancel::new(user_data(KIND_RECV, gen_, id, 0))
            .build()
            .user_data(user_data(KIND_CANCEL, 0, id, 0));
        self.push(cancel);
        self.stats.syscalls += 1;
        let _ = self.ring.submitter().register_files_update(id, &[-1]);
        self.rearm.retain(|&r| r != id);
        drop(sock);
        self.released.push(id);
    }

    fn connect(&mut self, id: SockId, peer: SocketAddr) -> io::Result<()> {
        let sock = self
            .socks
            .get(id as usize)
            .and_then(|s| s.sock.as_ref())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such socket"))?;
        self.stats.syscalls += 1;
        sock.connect(peer)
    }

    fn local_addr(&self, id: SockId) -> io::Result<SocketAddr> {
        self.socks
            .get(id as usize)
            .and_then(|s| s.sock.as_ref())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such socket"))?
            .local_addr()
    }

    fn poll(&mut self, timeout: Duration) -> io::Result<()> {
        self.stats.polls += 1;
        let rearm = std::mem::take(&mut self.rearm);
        for &slot in &rearm {
            self.arm(slot);
        }
        self.rearm = rearm;
        self.rearm.clear();
        // Completions may already be waiting (a previous turn stopped early): then only submit.
        let ready = !self.ring.completion().is_empty() || !self.deferred.is_empty();
        let ts = Timespec::from(timeout);
        let (want, args) = if ready || timeout.is_zero() {
            (0, SubmitArgs::new())
        } else if self.min_wait && self.config.batch_wait_us > 0 {
            (
                self.config.wait_batch.max(1) as usize,
                SubmitArgs::new().min_wait_usec(self.config.batch_wait_us),
            )
        } else {
            (1, SubmitArgs::new())
        };
        let args = args.timespec(&ts);
        self.stats.syscalls += 1;
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        // Only a turn that is behind (its timers already due: a zero timeout) drains; a worker
        // that keeps up (an echo worker, say) would pay the extra enters for nothing.
        if timeout.is_zero() {
            self.run_pending_work();
        }
        self.release_slots();
        self.reap();
        Ok(())
    }

    fn rx_count(&self) -> usize {
        self.batch.len()
    }

    fn rx_meta(&self, i: usize) -> RxMeta {
        self.batch[i].meta
    }

    fn rx_buf(&mut self, i: usize) -> &mut [u8] {
        let e = self.batch[i];
        // SAFETY: buffer `e.bid` is out of the ring (the kernel handed it to us) and only this
        // batch entry refers to it; the slice stays inside the buffer.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.bufs.buf_ptr(e.bid).add(usize::from(e.offset)),
                BUF_SIZE - usize::from(e.offset),
            )
        }
    }

    fn send_rx(&mut self, i: usize, sock: SockId, len: usize, to: Option<SocketAddr>) {
        let e = &mut self.batch[i];
        if e.sent {
            return;
        }
        e.sent = true;
        let (bid, offset) = (e.bid, e.offset);
        let len = len.min(BUF_SIZE - usize::from(offset));
        // SAFETY: inside buffer `bid`.
        let ptr = unsafe { self.bufs.buf_ptr(bid).add(usize::from(offset)) };
        let gen_ = self.socks.get(sock as usize).map_or(0, |s| s.gen_);
        let ud = user_data(KIND_SEND_RX, gen_, sock, bid);
        let to = to.map(|a| {
            // rx_addr never reallocates: the entry stays put until the SQE is submitted.
            let slot = &mut self.rx_addr[usize::from(bid)];
            *slot = RawAddr::new(a);
            (slot.as_ptr(), slot.len())
        });
        self.send(sock, ptr, len, to, ud);
    }

    fn end_rx(&mut self) {
        let mut returned = false;
        for e in self.batch.drain(..) {
            if !e.sent {
                self.bufs.push(e.bid);
                returned = true;
            }
        }
        if returned {
            self.bufs.publish();
        }
    }

    fn tx_buf(&mut self) -> Option<&mut [u8]> {
        let slot = match self.tx.current {
            Some(s) => s,
            None => {
                if self.tx.free.is_empty() {
                    self.flush_sends();
                }
                match self.tx.free.pop() {
                    Some(s) => {
                        self.tx.current = Some(s);
                        s
                    }
                    None => {
                        self.stats.tx_no_buffer += 1;
                        return None;
                    }
                }
            }
        };
        // SAFETY: slot < tx entries; the buffer is not in flight (it is `current`).
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.tx.mem.ptr.add(usize::from(slot) * BUF_SIZE),
                BUF_SIZE,
            )
        })
    }

    fn send_tx(&mut self, sock: SockId, len: usize, to: Option<SocketAddr>) {
        let Some(slot) = self.tx.current.take() else {
            return;
        };
        // SAFETY: inside the pool.
        let ptr = unsafe { self.tx.mem.ptr.add(usize::from(slot) * BUF_SIZE) };
        let ud = user_data(KIND_SEND_TX, 0, sock, slot);
        let to = to.map(|a| {
            // tx.addr never reallocates: the entry stays put until the SQE is submitted.
            let entry = &mut self.tx.addr[usize::from(slot)];
            *entry = RawAddr::new(a);
            (entry.as_ptr(), entry.len())
        });
        self.send(sock, ptr, len.min(BUF_SIZE), to, ud);
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}
