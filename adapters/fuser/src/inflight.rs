//! Counts core calls still running, so that `Mounted::wait` returns only after the last one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Number of request tasks that have not finished yet.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    lock: Mutex<()>,
    idle: Condvar,
}

/// Held by one request task; dropping it (also on panic or cancellation) marks it finished.
#[derive(Debug)]
pub(crate) struct Guard(Arc<InFlight>);

impl InFlight {
    /// Registers one more running task.
    pub(crate) fn enter(self: &Arc<Self>) -> Guard {
        self.count.fetch_add(1, Ordering::SeqCst);
        Guard(Arc::clone(self))
    }

    /// Blocks until no task is running.
    pub(crate) fn wait_idle(&self) {
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while self.count.load(Ordering::SeqCst) > 0 {
            guard = self
                .idle
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Taking the lock orders this wake-up after a waiter's check of the count.
            let _lock = self.0.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.0.idle.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wait_idle_returns_after_last_guard() {
        let inflight = Arc::new(InFlight::default());
        let guards: Vec<Guard> = (0..3).map(|_| inflight.enter()).collect();
        let waiter = {
            let inflight = Arc::clone(&inflight);
            std::thread::spawn(move || inflight.wait_idle())
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished());
        drop(guards);
        assert!(waiter.join().is_ok());
        inflight.wait_idle();
    }
}
