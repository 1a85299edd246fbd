//! Pause points, for tests that must force an interleaving against a real
//! server (feature `test-hooks`, which only this workspace's tests turn on).
//!
//! The runtime calls `point(name, namespace)` where a test may want to stop
//! it: between the steps of a big invalidation, before the outbox's
//! background retry. A test [`hold`]s a point for one namespace; the tasks
//! of that namespace that reach it wait there until the test releases it
//! (or drops the [`Hold`]). Without the feature, `point` is an empty inline
//! function and nothing is compiled in.

/// Waits here while a test holds `name` for `namespace`.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) async fn point(_name: &str, _namespace: &str) {}

#[cfg(feature = "test-hooks")]
pub(crate) use held::point;
#[cfg(feature = "test-hooks")]
pub use held::{Hold, coalesced_connections, hold};

/// Counts a connection made coalesced (`store/redis/coalesce.rs`), for
/// tests to tell that it was.
#[cfg(not(feature = "test-hooks"))]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[inline(always)]
pub(crate) fn coalesced() {}

#[cfg(feature = "test-hooks")]
pub(crate) use held::coalesced;

#[cfg(feature = "test-hooks")]
mod held {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::sync::watch;

    /// The points held: (point, namespace) -> its gate.
    type Gates = HashMap<(String, String), Arc<Gate>>;
    static HELD: Mutex<Option<Gates>> = Mutex::new(None);
    /// How many are held: reaching a point costs one load when none is.
    static COUNT: AtomicUsize = AtomicUsize::new(0);

    #[derive(Debug)]
    struct Gate {
        /// How many tasks reached it.
        reached: watch::Sender<usize>,
        open: watch::Sender<bool>,
    }

    fn held() -> std::sync::MutexGuard<'static, Option<Gates>> {
        HELD.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn point(name: &str, namespace: &str) {
        if COUNT.load(Ordering::Acquire) == 0 {
            return;
        }
        let gate = held()
            .as_ref()
            .and_then(|m| m.get(&(name.to_owned(), namespace.to_owned())).cloned());
        if let Some(gate) = gate {
            let mut open = gate.open.subscribe();
            gate.reached.send_modify(|n| *n += 1);
            let _ = open.wait_for(|open| *open).await;
        }
    }

    /// Connections made coalesced in this process so far.
    static COALESCED: AtomicUsize = AtomicUsize::new(0);

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn coalesced() {
        COALESCED.fetch_add(1, Ordering::Relaxed);
    }

    /// How many connections this process has made coalesced
    /// (`store/redis/coalesce.rs`) so far.
    pub fn coalesced_connections() -> usize {
        COALESCED.load(Ordering::Relaxed)
    }

    /// A held pause point; released when dropped.
    #[derive(Debug)]
    pub struct Hold {
        key: (String, String),
        gate: Arc<Gate>,
    }

    /// Holds the pause point `name` for the caches of `namespace`.
    pub fn hold(name: &str, namespace: &str) -> Hold {
        let key = (name.to_owned(), namespace.to_owned());
        let gate = Arc::new(Gate {
            reached: watch::channel(0).0,
            open: watch::channel(false).0,
        });
        let previous = held()
            .get_or_insert_with(HashMap::new)
            .insert(key.clone(), gate.clone());
        assert!(previous.is_none(), "{key:?} is already held");
        COUNT.fetch_add(1, Ordering::AcqRel);
        Hold { key, gate }
    }

    impl Hold {
        /// Waits until `n` tasks in all have reached the point.
        pub async fn reached(&self, n: usize) {
            let mut reached = self.gate.reached.subscribe();
            let _ = reached.wait_for(|r| *r >= n).await;
        }

        /// How many tasks have reached the point so far.
        pub fn count(&self) -> usize {
            *self.gate.reached.borrow()
        }

        /// Lets the waiting tasks (and every later one) through.
        pub fn release(self) {}
    }

    impl Drop for Hold {
        fn drop(&mut self) {
            if let Some(map) = held().as_mut() {
                map.remove(&self.key);
            }
            COUNT.fetch_sub(1, Ordering::AcqRel);
            self.gate.open.send_replace(true);
        }
    }
}
