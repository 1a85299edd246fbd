//! The connection to one Redis server: a multiplexed connection made on
//! first use, and made again after it fails (one attempt at a time, shared
//! by the calls that wait on it, and driven by its own task so that callers
//! giving up do not cancel it).
//!
//! It does what `redis`'s `ConnectionManager` did here, and one thing more:
//! it says whether a connection is up right now ([`Link::up`]). A request
//! sent on an established connection is bounded by that connection's own
//! response timeout (send and reply), so a read that finds the connection up
//! needs no second timer (`store::Guarded`); a call that has to wait for a
//! connection is timed by the cache as before.
//!
//! Such a read borrows a spare clone of the connection (`Spares`) and gives
//! it back: cloning the connection for every read would take the state's
//! lock and count three references up and down, all shared by every thread.
//!
//! On plain TCP the connection is made here, its driver coalescing the
//! writes of concurrent requests (`coalesce`); every request on it is
//! counted through [`Up::request`] or [`Up::requests`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value,
};

use super::coalesce::{self, Driver};
use crate::stats::{STRIPES, stripe};

type Connecting = Shared<BoxFuture<'static, Result<Connected, RedisError>>>;

enum State {
    /// No connection, none being made: the next call starts one.
    Down,
    Connecting(u64, Connecting),
    Up(u64, Connected),
}

/// A connection made, and its driver's task when this crate spawned it
/// (aborted once the last handle to it is dropped).
#[derive(Clone)]
struct Connected(MultiplexedConnection, Option<Arc<Driver>>);

struct Inner {
    client: Client,
    config: AsyncConnectionConfig,
    /// How long connecting (and the handshake) may take.
    connect_timeout: Duration,
    /// The state, and the number the next connection gets (so that a
    /// failure reported on an older connection does not drop a newer one).
    state: Mutex<(State, u64)>,
    /// The number of the connection up (`NONE`: none is), as `state` says:
    /// written under its lock, read without it.
    current: AtomicU64,
    spares: Spares,
}

/// No connection is up.
const NONE: u64 = u64::MAX;

/// The most spares a stripe keeps (as many as its threads had reads in
/// flight at once, up to this; past it a clone given back is dropped).
const SPARES_PER_STRIPE: usize = 64;

/// Clones of the connection up, kept after a read for the next one, by
/// stripe of threads: a thread takes from and gives back to its own stripe,
/// so its lock is seldom contended and stays in that thread's cache.
struct Spares([Stripe; STRIPES]);

/// One stripe, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Stripe(Mutex<Vec<Up>>);

impl Spares {
    /// The calling thread's stripe.
    fn mine(&self) -> MutexGuard<'_, Vec<Up>> {
        self.0[stripe()].0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every spare (their connection went down).
    fn clear(&self) {
        for stripe in &self.0 {
            let spares = std::mem::take(&mut *stripe.0.lock().unwrap_or_else(|e| e.into_inner()));
            drop(spares);
        }
    }
}

/// A cheap handle (clones share the connection).
#[derive(Clone)]
pub(crate) struct Link(Arc<Inner>);

/// A connection that was up when taken, and its number.
pub(crate) struct Up {
    conn: Connected,
    generation: u64,
}

impl Link {
    /// Connects lazily: nothing happens until the first call.
    pub(crate) fn new(
        client: Client,
        config: AsyncConnectionConfig,
        connect_timeout: Duration,
    ) -> Self {
        Link(Arc::new(Inner {
            client,
            config,
            connect_timeout,
            state: Mutex::new((State::Down, 0)),
            current: AtomicU64::new(NONE),
            spares: Spares(Default::default()),
        }))
    }

    fn state(&self) -> MutexGuard<'_, (State, u64)> {
        // The lock is never held across user code or an await: a poisoned
        // lock still holds a consistent state.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection, if one is up now: a spare clone of it, else a new
    /// clone. Give it back with [`keep`](Self::keep).
    pub(crate) fn up(&self) -> Option<Up> {
        if self.0.current.load(Ordering::Acquire) == NONE {
            return None;
        }
        let spare = self.0.spares.mine().pop();
        // Checked after the pop (not against a number read before it): a
        // spare is of the connection up now, or it is dropped.
        match spare {
            Some(up) if up.generation == self.0.current.load(Ordering::Acquire) => Some(up),
            _ => match &self.state().0 {
                State::Up(generation, connected) => Some(Up {
                    conn: connected.clone(),
                    generation: *generation,
                }),
                State::Down | State::Connecting(..) => None,
            },
        }
    }

    /// Keeps a connection taken with [`up`](Self::up) for another read, if
    /// it is still the one up (and the calling thread's stripe has room).
    pub(crate) fn keep(&self, up: Up) {
        let refused = {
            let mut spares = self.0.spares.mine();
            // Read under the stripe's lock: `Up::check` marks the
            // connection down before it clears the stripes, so a clone of
            // it is either refused here or pushed before the clearing
            // reaches this stripe.
            if up.generation == self.0.current.load(Ordering::Acquire)
                && spares.len() < SPARES_PER_STRIPE
            {
                spares.push(up);
                None
            } else {
                Some(up)
            }
        };
        drop(refused);
    }

    /// The connection: the one up, or the one being made (starting it if
    /// none is). Waiting for it is not bounded here: callers time it.
    async fn get(&self) -> Result<Up, RedisError> {
        let (generation, connecting) = {
            let mut state = self.state();
            let (current, next) = &mut *state;
            match current {
                State::Up(generation, connected) => {
                    return Ok(Up {
                        conn: connected.clone(),
                        generation: *generation,
                    });
                }
                State::Connecting(generation, connecting) => (*generation, connecting.clone()),
                State::Down => {
                    let generation = *next;
                    *next += 1;
                    let connecting = self.connect(generation);
                    *current = State::Connecting(generation, connecting.clone());
                    (generation, connecting)
                }
            }
        };
        Ok(Up {
            conn: connecting.await?,
            generation,
        })
    }

    /// Starts connection attempt `generation` on its own task, which records
    /// the outcome.
    fn connect(&self, generation: u64) -> Connecting {
        let inner = Arc::clone(&self.0);
        let attempt = async move {
            let (client, config) = (&inner.client, &inner.config);
            match coalesce::connect(client, config, inner.connect_timeout).await {
                Some(made) => made.map(|(conn, driver)| Connected(conn, Some(Arc::new(driver)))),
                None => client
                    .get_multiplexed_async_connection_with_config(config)
                    .await
                    .map(|conn| Connected(conn, None)),
            }
        }
        .boxed()
        .shared();
        let weak = Arc::downgrade(&self.0);
        let outcome = attempt.clone();
        tokio::spawn(async move {
            let result = outcome.await;
            let Some(inner) = weak.upgrade() else { return };
            let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(state.0, State::Connecting(g, _) if g == generation) {
                state.0 = match result {
                    Ok(connected) => {
                        inner.current.store(generation, Ordering::Release);
                        State::Up(generation, connected)
                    }
                    Err(_) => State::Down,
                };
            }
        });
        attempt
    }
}

impl Up {
    /// Sends `cmd` (`redis`'s boxed request), counted for the driver's
    /// coalescing until its reply (nothing to count where `redis` made the
    /// connection). Every request on an `Up` goes through here or
    /// [`requests`](Self::requests).
    pub(crate) fn request<'a>(
        &'a mut self,
        cmd: &'a Cmd,
    ) -> impl Future<Output = RedisResult<Value>> + 'a {
        let Connected(conn, driver) = &mut self.conn;
        let sending = driver.as_ref().map(|driver| driver.gate.sending());
        let reply = conn.req_packed_command(cmd);
        async move {
            let reply = reply.await;
            drop(sending);
            reply
        }
    }

    /// [`request`](Self::request) for a pipeline.
    pub(crate) fn requests<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> impl Future<Output = RedisResult<Vec<Value>>> + 'a {
        let Connected(conn, driver) = &mut self.conn;
        let sending = driver.as_ref().map(|driver| driver.gate.sending());
        let replies = conn.req_packed_commands(pipeline, offset, count);
        async move {
            let replies = replies.await;
            drop(sending);
            replies
        }
    }

    /// Reports the outcome of a request on this connection to `link`: an
    /// error that means the connection is gone (dropped, broken, timed out)
    /// makes the next call connect again (unless a newer connection is up
    /// already).
    pub(crate) fn check<T>(&self, link: &Link, result: &Result<T, RedisError>) {
        if let Err(e) = result
            && e.is_unrecoverable_error()
        {
            let mut state = link.state();
            if matches!(state.0, State::Up(g, _) if g == self.generation) {
                state.0 = State::Down;
                link.0.current.store(NONE, Ordering::Release);
                drop(state);
                link.0.spares.clear();
            }
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            let mut up = self.get().await?;
            let result = up.request(cmd).await;
            up.check(self, &result);
            result
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            let mut up = self.get().await?;
            let result = up.requests(cmd, offset, count).await;
            up.check(self, &result);
            result
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        self.0.client.get_connection_info().redis_settings().db()
    }
}
