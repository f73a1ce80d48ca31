//! Stopping event loops from another thread or from a signal.
//!
//! A [`Shutdown`] is a flag plus the [`mio::Waker`]s of every loop that watches it: requesting
//! shutdown sets the flag and wakes each loop, which then sees the flag and returns. It is
//! cheap to clone and every clone controls the same flag.
//!
//! ```
//! use makler::shutdown::Shutdown;
//!
//! let shutdown = Shutdown::new();
//! let for_thread = shutdown.clone();
//! std::thread::spawn(move || for_thread.request()).join().unwrap();
//! assert!(shutdown.is_requested());
//! ```

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mio::Waker;

/// A shutdown flag shared by event loops and whoever stops them.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    requested: AtomicBool,
    wakers: Mutex<Vec<Arc<Waker>>>,
    /// Dropped on request, which disconnects every receiver from [`Shutdown::stopped`].
    senders: Mutex<Vec<crossbeam_channel::Sender<()>>>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown").field("requested", &self.is_requested()).finish()
    }
}

impl Shutdown {
    /// A flag that is not set yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes `waker` when shutdown is requested (at once when it has been already).
    pub fn watch(&self, waker: Arc<Waker>) -> io::Result<()> {
        self.inner.wakers.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::clone(&waker));
        if self.is_requested() { waker.wake() } else { Ok(()) }
    }

    /// A channel that disconnects when shutdown is requested, for threads that wait on
    /// channels or timers rather than on a mio poll: `recv_timeout` on it sleeps, and returns
    /// `Disconnected` at once when it is time to stop.
    pub fn stopped(&self) -> crossbeam_channel::Receiver<()> {
        let (sender, receiver) = crossbeam_channel::bounded(0);
        let mut senders = self.inner.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.is_requested() {
            senders.push(sender);
        }
        receiver
    }

    /// Sets the flag and wakes every watching loop.
    pub fn request(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        self.inner.senders.lock().unwrap_or_else(PoisonError::into_inner).clear();
        for waker in self.inner.wakers.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            // A loop whose poll is gone has stopped already.
            let _ = waker.wake();
        }
    }

    /// Whether shutdown has been requested.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Requests shutdown on the first SIGINT or SIGTERM; a second one ends the process at once
    /// (exit code 130), for when a clean stop hangs. Runs a small thread that waits for signals.
    pub fn on_signals(&self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let shutdown = self.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for (count, _) in signals.forever().enumerate() {
                if count > 0 {
                    std::process::exit(130);
                }
                shutdown.request();
            }
        })?;
        Ok(())
    }
}
