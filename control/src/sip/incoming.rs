//! Admission of the connections peers open to a SIP TCP/TLS listener.
//!
//! At most [`Incoming::limit`] are in use at once. The limit stays below the process's file
//! limit, so accepting never fails for want of a descriptor. At the limit, the connection
//! that has been open longest without sending a SIP message is closed to make room. A flood
//! of idle connections therefore cannot lock out peers that speak. Only when every open
//! connection has spoken is the new one refused. Connections told to close hold their
//! descriptors until their tasks end: the listener waits ([`Incoming::room`]) while more than
//! [`CLOSING_SLACK`] of them are still open.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The most connections admitted at once, whatever the file limit allows.
const MAX_INCOMING: usize = 4096;
/// Descriptors left for everything else: the engine's control connection, the UDP and
/// listening sockets, connections we open.
const RESERVED_FILES: usize = 64;
/// Connections told to close whose descriptors may still be open before accepting waits.
const CLOSING_SLACK: usize = RESERVED_FILES / 2;

/// The open incoming connections of one listener.
#[derive(Debug)]
pub(crate) struct Incoming {
    open: Arc<Mutex<Open>>,
    limit: usize,
    /// Connections closed to make room.
    evicted: AtomicU64,
    /// Connections refused because every open one had spoken.
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    /// By age: the first key is the oldest connection.
    conns: BTreeMap<u64, Conn>,
    /// Of those, the ones told to close.
    closing: usize,
    /// Signalled when a connection's descriptor is gone.
    freed: Arc<Notify>,
}

#[derive(Debug)]
struct Conn {
    spoke: bool,
    closing: bool,
    close: Arc<Notify>,
}

/// One admitted connection: it leaves the set when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    open: Arc<Mutex<Open>>,
    key: u64,
    close: Arc<Notify>,
}

/// What became of a connection at accept.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Admitted.
    Admitted(Slot),
    /// Admitted in place of the oldest silent connection, which is told to close.
    Evicted(Slot),
    /// Refused: the limit is reached and every open connection has spoken.
    Full,
}

impl Incoming {
    /// A set limited by the process's file limit (`RLIMIT_NOFILE`, soft): three quarters of
    /// what is left after [`RESERVED_FILES`], at most [`MAX_INCOMING`], at least 16.
    pub(crate) fn new() -> Incoming {
        let files = nofile_limit().unwrap_or(1024);
        let limit = (files.saturating_sub(RESERVED_FILES) * 3 / 4).clamp(16, MAX_INCOMING);
        Incoming::with_limit(limit)
    }

    fn with_limit(limit: usize) -> Incoming {
        Incoming {
            open: Arc::default(),
            limit,
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The most connections admitted at once.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Connections closed to make room, and connections refused, so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.evicted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    /// Admits a new connection, making room if it must.
    pub(crate) fn admit(&self) -> Admission {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = false;
        if open.conns.len() - open.closing >= self.limit {
            let Some(victim) = open.conns.values_mut().find(|c| !c.spoke && !c.closing) else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Admission::Full;
            };
            victim.closing = true;
            victim.close.notify_one();
            open.closing += 1;
            self.evicted.fetch_add(1, Ordering::Relaxed);
            evicted = true;
        }
        let key = open.next;
        open.next += 1;
        let close = Arc::new(Notify::new());
        open.conns.insert(
            key,
            Conn {
                spoke: false,
                closing: false,
                close: close.clone(),
            },
        );
        let slot = Slot {
            open: self.open.clone(),
            key,
            close,
        };
        if evicted {
            Admission::Evicted(slot)
        } else {
            Admission::Admitted(slot)
        }
    }
}

impl Incoming {
    /// Completes when there is room to accept: fewer than [`CLOSING_SLACK`] connections told to
    /// close still hold their descriptors.
    pub(crate) async fn room(&self) {
        loop {
            let freed = {
                let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
                if open.closing < CLOSING_SLACK {
                    return;
                }
                open.freed.clone()
            };
            let wait = freed.notified();
            // Checked again after the waiter exists: a drop in between is not missed.
            if self.open.lock().unwrap_or_else(|p| p.into_inner()).closing < CLOSING_SLACK {
                return;
            }
            wait.await;
        }
    }
}

impl Slot {
    /// The connection carried a SIP message: it is no longer the first to go.
    pub(crate) fn spoke(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = open.conns.get_mut(&self.key) {
            c.spoke = true;
        }
    }

    /// Completes when the connection must close to make room.
    pub(crate) async fn closing(&self) {
        self.close.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.conns.remove(&self.key).is_some_and(|c| c.closing) {
            open.closing -= 1;
        }
        open.freed.notify_waiters();
    }
}

/// The process's soft limit of open files.
fn nofile_limit() -> Option<usize> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    (rc == 0).then(|| usize::try_from(l.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn slot(a: Admission) -> Slot {
        match a {
            Admission::Admitted(s) | Admission::Evicted(s) => s,
            Admission::Full => panic!("refused"),
        }
    }

    #[test]
    fn at_the_limit_the_oldest_silent_connection_makes_room() {
        let set = Incoming::with_limit(3);
        let a = slot(set.admit());
        let b = slot(set.admit());
        let c = slot(set.admit());
        a.spoke();
        // b is the oldest that never spoke: it goes.
        let d = set.admit();
        assert!(matches!(d, Admission::Evicted(_)));
        assert_eq!(set.counts(), (1, 0));
        // b was told to close (a stored permit completes at once); until it is gone, its
        // descriptor still counts for room but not against the limit.
        {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let mut closing = std::pin::pin!(b.closing());
            assert!(closing.as_mut().poll(&mut cx).is_ready());
        }
        assert_eq!(set.open.lock().unwrap().closing, 1);
        drop(b);
        assert_eq!(set.open.lock().unwrap().closing, 0);
        c.spoke();
        let d = slot(d);
        d.spoke();
        // Everyone left has spoken: the next is refused.
        assert!(matches!(set.admit(), Admission::Full));
        assert_eq!(set.counts(), (1, 1));
        drop(a);
        assert!(matches!(set.admit(), Admission::Admitted(_)));
    }

    #[test]
    fn the_limit_stays_below_the_file_limit() {
        let set = Incoming::new();
        let files = nofile_limit().unwrap();
        assert!(set.limit() < files.max(17), "{} of {files}", set.limit());
        assert!(set.limit() <= MAX_INCOMING);
    }
}
