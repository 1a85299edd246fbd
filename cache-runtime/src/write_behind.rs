//! Write-behind: writes are accepted into a durable queue on Redis (a
//! stream with a consumer group), the cache is updated at once, and workers
//! flush the writes to the database in batches.
//!
//! - [`WriteBehind::write`] appends `{k: key, v: value}` to the stream
//!   `ns#wb:<name>` (`XADD`), then stores the value in the cache as
//!   `Cache::put` does (older fills refused). The write is accepted once the
//!   append succeeded.
//! - A [`Worker`] first re-reads the entries it was handed and did not
//!   acknowledge, then claims entries another worker left pending for longer
//!   than `claim_idle` (`XAUTOCLAIM`: that worker crashed mid-batch), then
//!   reads new ones (`XREADGROUP >`). It calls the flush function with the
//!   batch; on `Ok` it acknowledges and deletes the entries (`XACK`, `XDEL`).
//!   On `Err` it retries the entries one by one, so a bad entry does not hold
//!   back the others; an entry that failed `max_tries` times (counted in
//!   `ns#wb:<name>:tries`, or delivered more often than that) is moved to
//!   the dead-letter stream `ns#wb:<name>:dead` with its error.
//! - Once a key's latest queued write is flushed (or dead-lettered), its
//!   cache entry is invalidated, so a row a reader loaded in between (older
//!   than the queued writes) does not stay.
//! - Writes of one key are flushed in order by one worker; a failed write
//!   holds back the later writes of its key. A round in which every write
//!   of several fails counts as a database outage: no try is counted.
//! - Delivery is at least once: a worker that dies after its database commit
//!   and before its acknowledgement has the batch flushed again, and two
//!   workers may flush writes of one key concurrently; flushes should be
//!   idempotent and ordered by [`Write::id`] (stream ids increase), for
//!   example `UPDATE ... WHERE last_write_id < $id`.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use crate::cache::{Cache, Links};
use crate::error::{Error, ErrorKind};
use crate::options::CacheOptions;

const GROUP: &str = "flushers";

/// KEYS: stream, latest. ARGV: key, value. Appends a write and records it
/// as the key's latest.
const APPEND: &str = r#"
local id = redis.call('XADD', KEYS[1], '*', 'k', ARGV[1], 'v', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], id)
return id
"#;

/// KEYS: stream, tries, latest. ARGV: group, then (id, key) pairs.
/// Acknowledges and deletes the entries; returns the keys whose latest
/// write this was (their cache entries may now be reloaded from the
/// database).
const SETTLE: &str = r#"
local settled = {}
for i = 2, #ARGV, 2 do
  local id, key = ARGV[i], ARGV[i + 1]
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  if redis.call('HGET', KEYS[3], key) == id then
    redis.call('HDEL', KEYS[3], key)
    settled[#settled + 1] = key
  end
end
return settled
"#;

/// A durable write-behind queue of values of type `T` for one cache.
#[derive(Debug)]
pub struct WriteBehind<T> {
    cache: Cache,
    stream: String,
    dead: String,
    tries: String,
    /// key -> id of its latest queued write.
    latest: String,
    _values: PhantomData<fn() -> T>,
}

impl<T> Clone for WriteBehind<T> {
    fn clone(&self) -> Self {
        WriteBehind {
            cache: self.cache.clone(),
            stream: self.stream.clone(),
            dead: self.dead.clone(),
            tries: self.tries.clone(),
            latest: self.latest.clone(),
            _values: PhantomData,
        }
    }
}

/// One queued write, as a worker's flush function receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Write<T> {
    /// The stream entry id.
    pub id: String,
    /// The cache key the write was made under.
    pub key: String,
    /// The value written.
    pub value: T,
}

fn redis_only() -> Error {
    Error::config("write-behind keeps its queue in a Redis stream; build the cache with Redis")
}

impl<T: Serialize + DeserializeOwned> WriteBehind<T> {
    /// The queue `name` of `cache` (a Redis cache); creates the stream and
    /// its consumer group if needed.
    pub async fn new(cache: &Cache, name: &str) -> Result<WriteBehind<T>, Error> {
        let Some(r) = cache.redis_store() else {
            return Err(redis_only());
        };
        let stream = cache.layout().write_behind(name);
        let created: Result<(), Error> = cache
            .bounded("write-behind setup", async {
                let mut conn = r.connection();
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(Error::from)
            })
            .await;
        if let Err(e) = created
            && !e.to_string().contains("BUSYGROUP")
        {
            return Err(e);
        }
        Ok(WriteBehind {
            cache: cache.clone(),
            dead: format!("{stream}:dead"),
            tries: format!("{stream}:tries"),
            latest: format!("{stream}:latest"),
            stream,
            _values: PhantomData,
        })
    }

    /// Accepts a write: appends it to the durable queue, then stores it in
    /// the cache under `key` (refusing older fills). `Ok` means the write
    /// is queued; it reaches the database when a worker flushes it.
    pub async fn write(
        &self,
        key: &str,
        value: &T,
        options: &CacheOptions,
        links: impl Into<Links>,
    ) -> Result<String, Error> {
        let payload = serde_json::to_vec(value)
            .map_err(|e| Error::with_source(ErrorKind::Codec, "encoding a write", e))?;
        let Some(r) = self.cache.redis_store() else {
            return Err(redis_only());
        };
        let id: String = self
            .cache
            .bounded("write-behind append", async {
                let mut conn = r.connection();
                redis::Script::new(APPEND)
                    .key(&self.stream)
                    .key(&self.latest)
                    .arg(key)
                    .arg(&payload)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(Error::from)
            })
            .await?;
        // Queued: a failure to update the cache now only costs a miss.
        if let Err(e) = self.cache.put(key, value, options, links).await {
            self.cache.report("write-behind cache update", &e);
        }
        Ok(id)
    }

    /// A worker named `consumer` (unique per worker) that flushes batches
    /// with `flush`.
    pub fn worker<F, Fut, E>(&self, consumer: &str, flush: F) -> Worker<T, F>
    where
        F: FnMut(Vec<Write<T>>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Display,
    {
        Worker {
            queue: self.clone(),
            consumer: consumer.to_owned(),
            flush,
            batch: 100,
            max_tries: 5,
            claim_idle: Duration::from_secs(30),
        }
    }

    /// The writes in the dead-letter stream (oldest first), with the error
    /// of their last try.
    pub async fn dead_letters(&self) -> Result<Vec<(Write<T>, String)>, Error> {
        let Some(r) = self.cache.redis_store() else {
            return Err(redis_only());
        };
        let reply: redis::streams::StreamRangeReply = self
            .cache
            .bounded("dead letters", async {
                let mut conn = r.connection();
                redis::cmd("XRANGE")
                    .arg(&self.dead)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .map_err(Error::from)
            })
            .await?;
        Ok(reply
            .ids
            .iter()
            .filter_map(|entry| {
                let write = decode(entry)?;
                let error = field(entry, "error").unwrap_or_default();
                Some((write, error))
            })
            .collect())
    }
}

fn field(entry: &redis::streams::StreamId, name: &str) -> Option<String> {
    match entry.map.get(name)? {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn decode<T: DeserializeOwned>(entry: &redis::streams::StreamId) -> Option<Write<T>> {
    let key = field(entry, "k")?;
    let value = match entry.map.get("v")? {
        redis::Value::BulkString(bytes) => serde_json::from_slice(bytes).ok()?,
        _ => return None,
    };
    Some(Write {
        id: entry.id.clone(),
        key,
        value,
    })
}

/// Flushes a write-behind queue to the database in batches.
#[derive(Debug)]
pub struct Worker<T, F> {
    queue: WriteBehind<T>,
    consumer: String,
    flush: F,
    batch: usize,
    max_tries: u64,
    claim_idle: Duration,
}

/// What one [`Worker::run_once`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushReport {
    /// Writes flushed and acknowledged.
    pub flushed: usize,
    /// Writes whose flush failed this time (they will be tried again).
    pub failed: usize,
    /// Writes moved to the dead-letter stream.
    pub dead: usize,
    /// Writes claimed from a worker that left them pending.
    pub claimed: usize,
}

impl<T, F, Fut, E> Worker<T, F>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(Vec<Write<T>>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    /// At most this many writes per batch. Default 100.
    pub fn batch(mut self, size: usize) -> Self {
        self.batch = size.max(1);
        self
    }

    /// A write whose flush failed this many times goes to the dead-letter
    /// stream. Default 5.
    pub fn max_tries(mut self, tries: u64) -> Self {
        self.max_tries = tries.max(1);
        self
    }

    /// Entries another worker has held unacknowledged for longer than this
    /// are taken over (that worker is presumed dead). Default 30 s; keep it
    /// well above the longest flush.
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle;
        self
    }

    /// Takes one batch (own pending entries first, then entries claimed
    /// from dead workers, then new ones) and flushes it.
    pub async fn run_once(&mut self) -> Result<FlushReport, Error> {
        let mut report = FlushReport::default();
        let mut entries = self.read("0").await?;
        if entries.len() < self.batch {
            let claimed = self.claim().await?;
            report.claimed = claimed.len();
            entries.extend(claimed);
        }
        if entries.len() < self.batch {
            entries.extend(self.read(">").await?);
        }
        entries.truncate(self.batch);
        if entries.is_empty() {
            return Ok(report);
        }
        let delivered = self.delivered().await?;
        let mut writes = Vec::with_capacity(entries.len());
        for entry in &entries {
            match decode::<T>(entry) {
                Some(write) => writes.push(write),
                // Not a write this queue can read: straight to dead letters.
                None => {
                    self.bury(&entry.id, entry, "the entry does not decode")
                        .await?;
                    report.dead += 1;
                }
            }
        }
        if writes.is_empty() {
            return Ok(report);
        }
        let settled: Vec<(String, String)> = writes
            .iter()
            .map(|w| (w.id.clone(), w.key.clone()))
            .collect();
        if (self.flush)(writes).await.is_ok() {
            self.ack(&settled).await?;
            report.flushed += settled.len();
            return Ok(report);
        }
        // One by one, so a bad write does not hold back the others; but not
        // past a failed write of the same key (its writes stay in order).
        let retries: Vec<Write<T>> = entries.iter().filter_map(|e| decode::<T>(e)).collect();
        let single = retries.len() == 1;
        let mut blocked = std::collections::HashSet::new();
        let mut failures = Vec::new();
        for write in retries {
            if blocked.contains(&write.key) {
                report.failed += 1;
                continue;
            }
            let (id, key) = (write.id.clone(), write.key.clone());
            match (self.flush)(vec![write]).await {
                Ok(()) => {
                    self.ack(&[(id, key)]).await?;
                    report.flushed += 1;
                }
                Err(e) => {
                    blocked.insert(key);
                    failures.push((id, e.to_string()));
                }
            }
        }
        // Every write of several failed: the database is failing, not the
        // writes. No try is counted (no dead letters for an outage).
        let systemic = report.flushed == 0 && !single;
        for (id, error) in failures {
            if systemic {
                report.failed += 1;
                continue;
            }
            let failures = self.failed(&id).await?;
            let deliveries = delivered.get(&id).copied().unwrap_or(1);
            if failures >= self.max_tries || deliveries > self.max_tries {
                if let Some(entry) = entries.iter().find(|x| x.id == id) {
                    self.bury(&id, entry, &error).await?;
                }
                report.dead += 1;
            } else {
                report.failed += 1;
            }
        }
        Ok(report)
    }

    /// Runs batches until `stop` resolves, pausing `idle` when there is
    /// nothing to flush (and after an error, which is reported).
    pub async fn run(&mut self, idle: Duration, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            let pause = match self.run_once().await {
                Ok(report) => report.flushed + report.dead == 0,
                Err(e) => {
                    self.queue.cache.report("write-behind flush", &e);
                    true
                }
            };
            if pause {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(idle) => {}
                }
            } else if futures_poll_ready(&mut stop) {
                return;
            }
        }
    }

    async fn query<R: redis::FromRedisValue>(
        &self,
        what: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<R, Error> {
        let Some(r) = self.queue.cache.redis_store() else {
            return Err(redis_only());
        };
        self.queue
            .cache
            .bounded(what, async {
                let mut conn = r.connection();
                cmd.query_async(&mut conn).await.map_err(Error::from)
            })
            .await
    }

    /// `XREADGROUP` from `from` ("0": own pending entries, ">": new ones).
    async fn read(&self, from: &str) -> Result<Vec<redis::streams::StreamId>, Error> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.batch)
            .arg("STREAMS")
            .arg(&self.queue.stream)
            .arg(from);
        let reply: Option<redis::streams::StreamReadReply> =
            self.query("write-behind read", &cmd).await?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// `XAUTOCLAIM`: entries left pending by other workers for too long.
    async fn claim(&self) -> Result<Vec<redis::streams::StreamId>, Error> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.queue.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(u64::try_from(self.claim_idle.as_millis()).unwrap_or(u64::MAX))
            .arg("0-0")
            .arg("COUNT")
            .arg(self.batch);
        let reply: redis::streams::StreamAutoClaimReply =
            self.query("write-behind claim", &cmd).await?;
        Ok(reply.claimed)
    }

    /// How often each of this worker's pending entries was delivered.
    async fn delivered(&self) -> Result<HashMap<String, u64>, Error> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.queue.stream)
            .arg(GROUP)
            .arg("-")
            .arg("+")
            .arg(self.batch * 2)
            .arg(&self.consumer);
        let reply: redis::streams::StreamPendingCountReply =
            self.query("write-behind pending", &cmd).await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered as u64))
            .collect())
    }

    /// Acknowledges and deletes flushed (or buried) writes, then
    /// invalidates the cache entries of keys whose latest write this was:
    /// the database has it now, and a value a reader loaded meanwhile (an
    /// older row) must not stay.
    async fn ack(&self, writes: &[(String, String)]) -> Result<(), Error> {
        let Some(r) = self.queue.cache.redis_store() else {
            return Err(redis_only());
        };
        let settled: Vec<String> = self
            .queue
            .cache
            .bounded("write-behind ack", async {
                let mut conn = r.connection();
                let script = redis::Script::new(SETTLE);
                let mut inv = script.prepare_invoke();
                inv.key(&self.queue.stream)
                    .key(&self.queue.tries)
                    .key(&self.queue.latest)
                    .arg(GROUP);
                for (id, key) in writes {
                    inv.arg(id).arg(key);
                }
                inv.invoke_async(&mut conn).await.map_err(Error::from)
            })
            .await?;
        if !settled.is_empty() {
            self.queue
                .cache
                .invalidate()
                .keys(settled)
                .run_reported()
                .await;
        }
        Ok(())
    }

    /// Counts a failed flush of `id`; returns the failures so far.
    async fn failed(&self, id: &str) -> Result<u64, Error> {
        let mut cmd = redis::cmd("HINCRBY");
        cmd.arg(&self.queue.tries).arg(id).arg(1);
        self.query("write-behind tries", &cmd).await
    }

    /// Moves an entry to the dead-letter stream, with `error`.
    async fn bury(
        &self,
        id: &str,
        entry: &redis::streams::StreamId,
        error: &str,
    ) -> Result<(), Error> {
        let mut add = redis::cmd("XADD");
        add.arg(&self.queue.dead).arg("*").arg("id").arg(id);
        for name in ["k", "v"] {
            if let Some(redis::Value::BulkString(bytes)) = entry.map.get(name) {
                add.arg(name).arg(bytes.as_slice());
            }
        }
        add.arg("error").arg(error);
        let _: String = self.query("write-behind dead letter", &add).await?;
        tracing::warn!(target: "cache_runtime", stream = %self.queue.stream, id, error, "write moved to the dead-letter stream");
        // The cache held a value the database never got.
        let key = field(entry, "k").unwrap_or_default();
        self.ack(&[(id.to_owned(), key)]).await
    }
}

/// Whether `fut` is ready now (polled once with a no-op waker).
fn futures_poll_ready<F: Future<Output = ()>>(fut: &mut std::pin::Pin<&mut F>) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    fut.as_mut().poll(&mut cx).is_ready()
}

/// Stream records, fuzzed: a record this queue did not write (or that was
/// damaged) does not decode, and goes to the dead letters; it never panics.
#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use redis::Value;
    use redis::streams::StreamId;

    use super::*;
    use crate::fuzz_tests::{config, mutate, mutation, redis_value, short_hostile};

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Row {
        id: i64,
        title: String,
    }

    fn field_value() -> impl Strategy<Value = Value> {
        let row = (any::<i64>(), short_hostile())
            .prop_map(|(id, title)| serde_json::to_vec(&Row { id, title }).unwrap());
        prop_oneof![
            3 => (row, vec(mutation(), 0..3)).prop_map(|(b, m)| Value::BulkString(mutate(b, &m))),
            2 => short_hostile().prop_map(|s| Value::BulkString(s.into_bytes())),
            1 => short_hostile().prop_map(Value::SimpleString),
            1 => vec(any::<u8>(), 0..16).prop_map(Value::BulkString),
            1 => redis_value(),
        ]
    }

    fn record() -> impl Strategy<Value = StreamId> {
        let name = prop_oneof![
            Just("k".to_owned()),
            Just("v".to_owned()),
            Just("error".to_owned()),
            short_hostile(),
        ];
        (short_hostile(), vec((name, field_value()), 0..4)).prop_map(|(id, fields)| StreamId {
            id,
            map: fields.into_iter().collect(),
            ..StreamId::default()
        })
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn a_record_decodes_exactly_when_it_is_a_write(entry in record()) {
            let key = match entry.map.get("k") {
                Some(Value::BulkString(b)) => std::str::from_utf8(b).ok().map(str::to_owned),
                Some(Value::SimpleString(s)) => Some(s.clone()),
                _ => None,
            };
            prop_assert_eq!(field(&entry, "k"), key.clone());
            let value = match entry.map.get("v") {
                Some(Value::BulkString(b)) => serde_json::from_slice::<Row>(b).ok(),
                _ => None,
            };
            let want = key.zip(value).map(|(key, value)| Write {
                id: entry.id.clone(),
                key,
                value,
            });
            prop_assert_eq!(decode::<Row>(&entry), want);
            // Read as another type, or as any JSON: still no panic.
            let _ = decode::<serde_json::Value>(&entry);
            let _ = decode::<Vec<u8>>(&entry);
        }
    }
}
