//! How many actions run at once, here and remotely.
//!
//! Without a remote executor the pool's `--jobs` threads are the bound.
//! With one, the pool gets `--jobs` + `--remote-jobs` threads, since an
//! action waiting on a worker holds its thread; local executions then take
//! one of `--jobs` local slots and remote ones one of `--remote-jobs`.
//!
//! A thread that holds a local slot may run more actions on its stack
//! (rayon steals work while a rule waits on its own parallel work, or on
//! the children it submitted); those reuse its slot instead of waiting for
//! another, which could otherwise wait for itself. An action that submits
//! children lends its slot to them for as long as it waits.

use std::cell::Cell;
use std::sync::{Condvar, Mutex};

/// A counting semaphore; `None` counts nothing.
struct Semaphore(Option<(Mutex<usize>, Condvar)>);

impl Semaphore {
    fn new(n: Option<usize>) -> Semaphore {
        Semaphore(n.map(|n| (Mutex::new(n.max(1)), Condvar::new())))
    }

    fn acquire(&self) {
        if let Some((free, cv)) = &self.0 {
            let mut free = free.lock().unwrap_or_else(|e| e.into_inner());
            while *free == 0 {
                free = cv.wait(free).unwrap_or_else(|e| e.into_inner());
            }
            *free -= 1;
        }
    }

    fn release(&self) {
        if let Some((free, cv)) = &self.0 {
            *free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            cv.notify_one();
        }
    }
}

thread_local! {
    /// Local actions running on this thread's stack; the first took the slot.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

pub(crate) struct Slots {
    local: Semaphore,
    remote: Semaphore,
}

impl Slots {
    /// Unbounded: the pool's size is the bound.
    pub fn unbounded() -> Slots {
        Slots {
            local: Semaphore::new(None),
            remote: Semaphore::new(None),
        }
    }

    /// `jobs` local and `remote_jobs` remote executions at once.
    pub fn bounded(jobs: usize, remote_jobs: usize) -> Slots {
        Slots {
            local: Semaphore::new(Some(jobs)),
            remote: Semaphore::new(Some(remote_jobs)),
        }
    }

    /// Holds a local slot until dropped.
    pub fn local(&self) -> LocalSlot<'_> {
        if DEPTH.get() == 0 {
            self.local.acquire();
        }
        DEPTH.set(DEPTH.get() + 1);
        LocalSlot(self)
    }

    /// Holds a remote slot until dropped.
    pub fn remote(&self) -> RemoteSlot<'_> {
        self.remote.acquire();
        RemoteSlot(self)
    }

    /// Runs `f` (which waits for children) with this thread's local slot
    /// given back, when it holds exactly one.
    pub fn lend<T>(&self, f: impl FnOnce() -> T) -> T {
        let depth = DEPTH.get();
        if depth != 1 {
            return f();
        }
        DEPTH.set(0);
        self.local.release();
        let result = f();
        self.local.acquire();
        DEPTH.set(1);
        result
    }
}

pub(crate) struct LocalSlot<'s>(&'s Slots);

impl Drop for LocalSlot<'_> {
    fn drop(&mut self) {
        let depth = DEPTH.get().saturating_sub(1);
        DEPTH.set(depth);
        if depth == 0 {
            self.0.local.release();
        }
    }
}

pub(crate) struct RemoteSlot<'s>(&'s Slots);

impl Drop for RemoteSlot<'_> {
    fn drop(&mut self) {
        self.0.remote.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn nested_local_actions_reuse_their_threads_slot() {
        let slots = Slots::bounded(1, 1);
        let _outer = slots.local();
        // Would wait forever if it asked the semaphore again.
        let inner = slots.local();
        drop(inner);
        let lent = slots.lend(|| {
            // The slot is free while children run, even on another thread.
            std::thread::scope(|s| s.spawn(|| drop(slots.local())).join().is_ok())
        });
        assert!(lent);
    }

    #[test]
    fn at_most_n_hold_a_slot() {
        let slots = Arc::new(Slots::bounded(2, 1));
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (slots, now, peak) = (slots.clone(), now.clone(), peak.clone());
                std::thread::spawn(move || {
                    let _slot = slots.local();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
