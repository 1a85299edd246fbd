//! The comparison of issue 8: one `redis-server`, one run, five ways to read
//! the same 1 KB value through Redis:
//!
//! - `raw GET + decode` (the floor): a `redis` crate `GET` of the value's
//!   JSON and `serde_json` decoding it, nothing else;
//! - `hand-written cache-aside`: what one writes without a library: render
//!   the key, `GET`, decode, on a miss load and `SET EX`;
//! - `cached` crate: `#[concurrent_cached(redis = true, ..)]` of the `cached`
//!   crate (version 4) over its `AsyncRedisCache` (MessagePack values);
//! - this crate's `#[cached]` over Redis (one `GET` per hit, a 28-byte
//!   header before the JSON);
//! - the same `#[cached]` over two tiers (`CacheBuilder::local_ttl`): hits
//!   served from process memory;
//!
//! and, as a control, the floor a second time: identical code, so its
//! ratio to the first is this run's own noise, printed beside each target
//! it bears on. (Its place was a reference row, this crate's hit protocol
//! written by hand; since a hit is one `GET`, that protocol is the floor's.)
//!
//! For each: p50/p99 latency of warm hits with one task (on a current-thread
//! runtime of its own, see [`latency_apart`]), throughput (and
//! this process's CPU time per hit) with 16 and 64 concurrent tasks, and the
//! loader invocations when 1,000 tasks hit one cold key at once; the
//! throughput again with one worker thread, for the floor, its control, the
//! hand-written code and `#[cached]` over Redis (see
//! [`throughput_one_worker`]: it is what the throughput targets are judged
//! on, the two-worker figures beside them). Then a tag
//! covering 10,000 entries invalidated in one call, against deleting the
//! same keys with a pipeline of `DEL`s or `UNLINK`s, with the server's own
//! time for each. Contenders alternate in rounds so drift hits them alike.
//!
//! Run: `cargo bench -p benchmarks --bench compare` (about two and a half
//! minutes once built; prints markdown tables; the figures are in docs/BENCHMARKS.md).
//! `COMPARE_ONLY=<contender>` runs one contender's throughput alone, for a
//! profiler (see [`only_one`]); `COMPARE_ONLY=invalidation` runs only the
//! invalidation part. The run ends with a line per target of
//! issue 17 (`target met: ...` / `target missed: ...`, with the figure).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheOptions, Links, cached};
use cached::macros::concurrent_cached;
use integration_tests::RedisServer;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

/// Warm hits timed per contender, with one task.
const LATENCY_SAMPLES: usize = 20_000;
/// Rounds the latency samples are taken in (contenders alternate).
const LATENCY_ROUNDS: usize = 10;
/// How long each contender runs per throughput round, and the rounds (whole
/// turns of `in_turn`'s order: two of the six contenders, three of the
/// one-worker pass's four).
const THROUGHPUT_SLICE: Duration = Duration::from_millis(400);
const THROUGHPUT_ROUNDS: usize = 12;
const _: () = assert!(
    THROUGHPUT_ROUNDS.is_multiple_of(CONTENDERS.len())
        && THROUGHPUT_ROUNDS.is_multiple_of(ONE_WORKER.len())
);
/// Tasks calling one cold key at once.
const STAMPEDE_TASKS: usize = 1_000;
/// How long the "database" takes to load a row.
const LOAD_TIME: Duration = Duration::from_millis(20);
/// Entries under the one tag invalidated at once.
const TAG_ENTRIES: usize = 10_000;
const TAG_ROUNDS: usize = 9;

/// A row whose JSON is about 1 KB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Article {
    id: u64,
    author_id: u64,
    title: String,
    slug: String,
    description: String,
    body: String,
    tags: Vec<String>,
    created_at: String,
    updated_at: String,
    favorites_count: u32,
}

/// Bytes of the article body that make the JSON 1,024 bytes long.
const BODY_LEN: usize = 684;

impl Article {
    fn sample(id: u64) -> Article {
        let text = "Caching a read is easy; keeping it right after a write is the hard part. ";
        Article {
            id,
            author_id: id % 97,
            title: format!("How to cache article number {id} without going stale"),
            slug: format!("how-to-cache-article-{id}"),
            description: "Cache-aside reads, post-commit invalidation, and what goes wrong".into(),
            body: text.repeat(BODY_LEN / text.len() + 1)[..BODY_LEN].to_owned(),
            tags: vec!["rust".into(), "redis".into(), "caching".into()],
            created_at: "2026-11-23T10:00:00.000Z".into(),
            updated_at: "2026-11-23T11:30:00.000Z".into(),
            favorites_count: 42,
        }
    }
}

/// Loader invocations (one counter: the stampedes run one after another).
static LOADS: AtomicU64 = AtomicU64::new(0);

/// The "database": counts its calls, takes [`LOAD_TIME`].
async fn load(id: u64) -> Result<Article, io::Error> {
    LOADS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(LOAD_TIME).await;
    Ok(Article::sample(id))
}

/// The bench's server, for the `cached` crate's store (its macro builds the
/// store in a `static`, the first time the function is called).
static URL: OnceLock<String> = OnceLock::new();

/// The `cached` crate's Redis-backed macro, as its documentation shows it
/// (`ty` and `create` only to give it this run's server and a TTL).
#[concurrent_cached(
    redis = true,
    ty = "cached::AsyncRedisCache<u64, Article>",
    create = {
        cached::AsyncRedisCache::builder("cmp-cached")
            .ttl(Duration::from_secs(600))
            .connection_string(URL.get().expect("set before the first call"))
            .build()
            .await
            .expect("the cached crate's store")
    },
    map_error = |e| io::Error::other(format!("{e:?}"))
)]
async fn cached_crate_article(id: u64) -> Result<Article, io::Error> {
    load(id).await
}

/// This crate's macro, on a repository method.
#[derive(Debug)]
struct Articles {
    cache: Cache,
}

impl Articles {
    #[cached(cache = self.cache, key = "article:{id}", ttl = "10m")]
    async fn get(&self, id: u64) -> Result<Article, io::Error> {
        load(id).await
    }
}

/// Cache-aside written by hand over the same client: a fault of the cache
/// is a miss, a failed store is ignored.
async fn hand_written(redis: &MultiplexedConnection, id: u64) -> Result<Article, io::Error> {
    let mut conn = redis.clone();
    let key = format!("hand:article:{id}");
    if let Ok(Some(bytes)) = conn.get::<_, Option<Vec<u8>>>(&key).await
        && let Ok(article) = serde_json::from_slice(&bytes)
    {
        return Ok(article);
    }
    let article = load(id).await?;
    if let Ok(json) = serde_json::to_vec(&article) {
        let _: redis::RedisResult<()> = conn.set_ex(&key, json, 600).await;
    }
    Ok(article)
}

/// The floor: one `GET` of the JSON and its decoding.
async fn floor(conn: &mut MultiplexedConnection, key: &str) -> Article {
    let bytes: Vec<u8> = conn.get(key).await.expect("GET");
    serde_json::from_slice(&bytes).expect("JSON")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Floor,
    /// The floor again (the control: its ratio to `Floor` is noise).
    FloorAgain,
    Hand,
    CachedCrate,
    Ours,
    TwoTiers,
}

const CONTENDERS: [Contender; 6] = [
    Contender::Floor,
    Contender::FloorAgain,
    Contender::Hand,
    Contender::CachedCrate,
    Contender::Ours,
    Contender::TwoTiers,
];

impl Contender {
    /// The name `COMPARE_ONLY` takes.
    fn short(self) -> &'static str {
        match self {
            Contender::Floor => "floor",
            Contender::FloorAgain => "floor-again",
            Contender::Hand => "hand",
            Contender::CachedCrate => "cached",
            Contender::Ours => "ours",
            Contender::TwoTiers => "two-tiers",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Contender::Floor => "raw `GET` + decode (floor)",
            Contender::FloorAgain => "(control: the floor again; its ratio is the run's noise)",
            Contender::Hand => "hand-written cache-aside",
            Contender::CachedCrate => "`cached` 4.1 `#[concurrent_cached(redis = true)]`",
            Contender::Ours => "`#[cached]`, Redis",
            Contender::TwoTiers => "`#[cached]`, two tiers (`local_ttl`)",
        }
    }
}

/// What every contender reads through.
#[derive(Debug)]
struct Bench {
    redis: MultiplexedConnection,
    ours: Articles,
    two_tiers: Articles,
}

const FLOOR_KEY: &str = "floor:article:1";
const WARM_ID: u64 = 1;

impl Bench {
    /// A connection and the two caches of this crate, on the current
    /// runtime (each connection's driver task is spawned there).
    async fn connect(url: &str) -> Bench {
        Bench {
            redis: redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
            ours: Articles {
                cache: redis_cache(url, "ours", None).await,
            },
            two_tiers: Articles {
                cache: redis_cache(url, "two", Some(Duration::from_secs(600))).await,
            },
        }
    }

    /// One read of the warm key (or of `id`), through `who`; `conn` is the
    /// calling task's own connection handle, for the floor.
    async fn read(&self, who: Contender, conn: &mut MultiplexedConnection, id: u64) -> Article {
        match who {
            Contender::Floor | Contender::FloorAgain => floor(conn, FLOOR_KEY).await,
            Contender::Hand => hand_written(&self.redis, id).await.unwrap(),
            Contender::CachedCrate => cached_crate_article(id).await.unwrap(),
            Contender::Ours => self.ours.get(id).await.unwrap(),
            Contender::TwoTiers => self.two_tiers.get(id).await.unwrap(),
        }
    }
}

async fn redis_cache(url: &str, namespace: &str, local_ttl: Option<Duration>) -> Cache {
    let mut builder = Cache::builder().redis_url(url).namespace(namespace);
    if let Some(ttl) = local_ttl {
        builder = builder.local_ttl(ttl);
    }
    let cache = builder.build().unwrap();
    if local_ttl.is_some() {
        while !cache.listening() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    cache
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Single-task latency, measured on a current-thread runtime of its own
/// (on a thread of its own), with its own connections and caches (the same
/// namespaces, already warm): every wake-up of a round trip stays on that
/// one thread, whichever contender. On the two-worker runtime a contender's
/// p50 was about 20 µs or about 70 to 80 µs depending, it seems, on whether
/// its connection's driver task had landed on the caller's worker (see
/// BENCHMARKS.md). The `cached` crate's store is a `static` made on the
/// main runtime, so its calls still cross to that runtime's workers.
fn latency_apart(url: &str) -> (Vec<Vec<Duration>>, Vec<Duration>) {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { latency(Arc::new(Bench::connect(&url).await)).await })
    })
    .join()
    .unwrap()
}

/// Which contender runs `k`-th in `round`: the rows of a Williams design
/// (for six contenders, 0 1 5 2 4 3 plus the round, modulo 6), so that over
/// six rounds every contender runs once in every place and, within a round,
/// right after every other one exactly once (across the rounds' boundaries
/// the first of a round follows the last of the one before). (A rotation has each contender always
/// follow the same one: the floor ran after the two-tier slice, which
/// leaves Redis idle, in every round.)
fn in_turn(round: usize, k: usize) -> usize {
    in_turn_of(CONTENDERS.len(), round, k)
}

/// [`in_turn`] for `n` contenders.
fn in_turn_of(n: usize, round: usize, k: usize) -> usize {
    assert!(
        n.is_multiple_of(2),
        "a Williams design of this form needs an even number"
    );
    let first = match k {
        0 => 0,
        k if k % 2 == 1 => k.div_ceil(2),
        k => n - k / 2,
    };
    (first + round) % n
}

/// Single-task latency of warm hits: `LATENCY_ROUNDS` rounds, each timing
/// every contender in turn (in the order `in_turn` gives) on one spawned task.
async fn latency(bench: Arc<Bench>) -> (Vec<Vec<Duration>>, Vec<Duration>) {
    tokio::spawn(async move {
        let mut conn = bench.redis.clone();
        let mut samples = vec![Vec::with_capacity(LATENCY_SAMPLES); CONTENDERS.len()];
        // A bare moka get of the same value (cloned out, the key formatted
        // per call), timed in the same rounds: what a two-tier hit's tail
        // is measured against (moka applies its recorded reads inline on
        // every 64th read, the same for both).
        let bare = moka::sync::Cache::<String, Article>::new(1_000);
        bare.insert(format!("article:{WARM_ID}"), Article::sample(WARM_ID));
        let mut bare_samples = Vec::with_capacity(LATENCY_SAMPLES);
        for who in CONTENDERS {
            for _ in 0..1_000 {
                black_box(bench.read(who, &mut conn, WARM_ID).await);
            }
        }
        let per_round = LATENCY_SAMPLES / LATENCY_ROUNDS;
        for round in 0..LATENCY_ROUNDS {
            for k in 0..CONTENDERS.len() {
                let i = in_turn(round, k);
                let who = CONTENDERS[i];
                for _ in 0..per_round {
                    let start = Instant::now();
                    black_box(bench.read(who, &mut conn, black_box(WARM_ID)).await);
                    samples[i].push(start.elapsed());
                }
            }
            for _ in 0..per_round {
                let start = Instant::now();
                black_box(bare.get(&format!("article:{}", black_box(WARM_ID))));
                bare_samples.push(start.elapsed());
            }
        }
        for s in &mut samples {
            s.sort();
        }
        bare_samples.sort();
        (samples, bare_samples)
    })
    .await
    .unwrap()
}

/// Hits per second of `who` with `tasks` concurrent tasks for one slice.
/// CPU time this process has used (user + system; the server is another
/// process), from `/proc/self/stat` in clock ticks of 10 ms; zero where
/// there is no `/proc`.
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // After the command name in parentheses: state, ppid, ..., the 12th and
    // 13th fields are utime and stime.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// CPU time the hypervisor gave other virtual machines while this one's
/// were ready to run (steal, summed over the cores), from `/proc/stat` in
/// clock ticks of 10 ms; zero where there is none. A run with seconds of it
/// was slowed unevenly, contender by contender: read its ratios as noise.
fn steal() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    // "cpu user nice system idle iowait irq softirq steal ...".
    let ticks = stat
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(8))
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Hits of `who` with `tasks` concurrent tasks for one slice: how many, in
/// what time, with how much CPU time of this process.
async fn throughput_slice(
    bench: &Arc<Bench>,
    who: Contender,
    tasks: usize,
) -> (u64, Duration, Duration) {
    let cpu = process_cpu();
    let start = Instant::now();
    let deadline = start + THROUGHPUT_SLICE;
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let bench = bench.clone();
            tokio::spawn(async move {
                let mut conn = bench.redis.clone();
                let mut ops = 0u64;
                loop {
                    for _ in 0..16 {
                        black_box(bench.read(who, &mut conn, WARM_ID).await);
                    }
                    ops += 16;
                    if Instant::now() >= deadline {
                        return ops;
                    }
                    // A two-tier hit never waits: let the other tasks run.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut ops = 0;
    for h in handles {
        ops += h.await.unwrap();
    }
    (ops, start.elapsed(), process_cpu() - cpu)
}

/// Per contender of `who` with `tasks` tasks, over the rounds: hits per
/// second, and this process's CPU time per hit in µs.
async fn throughput(bench: &Arc<Bench>, who: &[Contender], tasks: usize) -> Vec<(f64, f64)> {
    let mut totals = vec![(0u64, Duration::ZERO, Duration::ZERO); who.len()];
    for round in 0..THROUGHPUT_ROUNDS {
        for k in 0..who.len() {
            let i = in_turn_of(who.len(), round, k);
            let (ops, took, cpu) = throughput_slice(bench, who[i], tasks).await;
            totals[i].0 += ops;
            totals[i].1 += took;
            totals[i].2 += cpu;
        }
    }
    totals
        .iter()
        .map(|(ops, took, cpu)| {
            (
                *ops as f64 / took.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / *ops as f64,
            )
        })
        .collect()
}

/// The contenders of the one-worker pass ([`throughput_one_worker`]): the
/// floor and its control, the hand-written code and `#[cached]` over Redis.
/// (The `cached` crate's store is a `static` on the main runtime, and a
/// two-tier hit does not reach Redis.)
const ONE_WORKER: [Contender; 4] = [
    Contender::Floor,
    Contender::FloorAgain,
    Contender::Hand,
    Contender::Ours,
];

/// Throughput as [`throughput`] measures it, with 16 and then 64 tasks, on
/// a runtime of one worker (a thread of its own, its own connection and
/// caches): the client on one thread, the server on the other core. With
/// two workers this 2-core machine runs three busy threads, and where the
/// scheduler puts them moves a slice's rate by tens of percent: the floor
/// landed up to 12% from itself in one run. With one worker it landed at
/// 0.96x to 1.03x of itself in three runs, and hits/s follow the client's
/// CPU per hit.
fn throughput_one_worker(url: &str) -> [Vec<(f64, f64)>; 2] {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let bench = Arc::new(Bench::connect(&url).await);
            let mut conn = bench.redis.clone();
            for who in ONE_WORKER {
                for _ in 0..100 {
                    black_box(bench.read(who, &mut conn, WARM_ID).await);
                }
            }
            [
                throughput(&bench, &ONE_WORKER, 16).await,
                throughput(&bench, &ONE_WORKER, 64).await,
            ]
        })
    })
    .join()
    .unwrap()
}

/// Loader invocations, and the time until every task had its value, when
/// `STAMPEDE_TASKS` tasks read one cold key through `who` at once.
async fn stampede(bench: &Arc<Bench>, who: Contender, id: u64) -> (u64, Duration) {
    LOADS.store(0, Ordering::SeqCst);
    let barrier = Arc::new(tokio::sync::Barrier::new(STAMPEDE_TASKS + 1));
    let handles: Vec<_> = (0..STAMPEDE_TASKS)
        .map(|_| {
            let bench = bench.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut conn = bench.redis.clone();
                barrier.wait().await;
                bench.read(who, &mut conn, id).await
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    for h in handles {
        assert_eq!(h.await.unwrap(), Article::sample(id));
    }
    (LOADS.load(Ordering::SeqCst), start.elapsed())
}

/// Fills `TAG_ENTRIES` entries under the tag `big` through `cache`, 64 at a
/// time.
async fn fill_tagged(cache: &Cache, value: &Article) {
    const OPTS: CacheOptions = CacheOptions::new("big");
    let cache = Arc::new(cache.clone());
    let handles: Vec<_> = (0..64)
        .map(|t| {
            let cache = cache.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for i in (t..TAG_ENTRIES).step_by(64) {
                    let _: Article = cache
                        .get_or_load_tagged(
                            &format!("item:{i}"),
                            &OPTS,
                            |_| Links::new().tag("big"),
                            || async { value.clone() },
                        )
                        .await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
}

async fn existing(conn: &mut MultiplexedConnection, keys: &[String]) -> usize {
    redis::cmd("EXISTS")
        .arg(keys)
        .query_async(conn)
        .await
        .unwrap()
}

/// Calls and microseconds per command the server has counted (`INFO
/// commandstats`; commands a script calls are counted too).
async fn command_stats(conn: &mut MultiplexedConnection) -> BTreeMap<String, (u64, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let field = |l: &str, name: &str| {
        l.split(',')
            .find_map(|f| f.strip_prefix(name))
            .map_or(0, |n| n.parse().unwrap())
    };
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| l.split_once(':'))
        .map(|(name, l)| (name.to_owned(), (field(l, "calls="), field(l, "usec="))))
        .collect()
}

/// What the server did between two [`command_stats`]: calls and µs per
/// command, most time first.
fn stats_delta(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
) -> Vec<(String, u64, u64)> {
    let mut delta: Vec<_> = after
        .iter()
        .map(|(name, (calls, usec))| {
            let (c0, u0) = before.get(name).copied().unwrap_or_default();
            (name.clone(), calls - c0, usec - u0)
        })
        .filter(|(name, calls, _)| *calls > 0 && name != "info")
        .collect();
    delta.sort_by_key(|(_, _, usec)| std::cmp::Reverse(*usec));
    delta
}

/// One way of removing the entries, timed.
#[derive(Debug, Default)]
struct Removal {
    /// As seen by the caller.
    client: Duration,
    /// Server time of the call (the script, or the pipeline's commands).
    server: Duration,
    /// Calls and µs per command inside the server.
    commands: Vec<(String, u64, u64)>,
}

/// Removing `TAG_ENTRIES` entries: one tag invalidation; a pipeline of one
/// `DEL` per entry; a pipeline of one `UNLINK` per entry (the same entries,
/// refilled before each), `TAG_ROUNDS` times each.
async fn invalidation(url: &str, conn: &mut MultiplexedConnection) -> [Vec<Removal>; 3] {
    let cache = redis_cache(url, "inv", None).await;
    let value = Article::sample(7);
    // Entry names: the namespace, `:`, the key (known up front).
    let keys: Vec<String> = (0..TAG_ENTRIES).map(|i| format!("inv:item:{i}")).collect();
    let mut times: [Vec<Removal>; 3] = Default::default();
    for _ in 0..TAG_ROUNDS {
        for (way, took) in times.iter_mut().enumerate() {
            fill_tagged(&cache, &value).await;
            assert_eq!(existing(conn, &keys).await, TAG_ENTRIES, "all filled");
            let before = command_stats(conn).await;
            let start = Instant::now();
            if way == 0 {
                let report = cache.invalidate().tag("big").await.unwrap();
                let client = start.elapsed();
                assert_eq!(report.removed, TAG_ENTRIES as u64);
                let commands = stats_delta(&before, &command_stats(conn).await);
                took.push(Removal {
                    client,
                    server: Duration::from_micros(
                        commands
                            .iter()
                            .find(|(name, _, _)| name == "evalsha")
                            .map_or(0, |c| c.2),
                    ),
                    commands,
                });
            } else {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd(if way == 1 { "DEL" } else { "UNLINK" })
                        .arg(key)
                        .ignore();
                }
                let () = pipe.query_async(conn).await.unwrap();
                let client = start.elapsed();
                let commands = stats_delta(&before, &command_stats(conn).await);
                took.push(Removal {
                    client,
                    server: Duration::from_micros(commands.iter().map(|c| c.2).sum()),
                    commands,
                });
                // Leave no tag members behind for the next fill.
                let _: () = conn.del("inv#tag:big").await.unwrap();
            }
            assert_eq!(existing(conn, &keys).await, 0, "all gone");
        }
    }
    times
}

async fn value_sizes(conn: &mut MultiplexedConnection) -> Vec<(String, usize)> {
    let mut sizes = Vec::new();
    let (_, names): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(1000)
        .query_async(conn)
        .await
        .unwrap();
    let mut names = names;
    names.sort();
    for name in names {
        if name.contains('#') {
            continue;
        }
        let len: usize = conn.strlen(&name).await.unwrap();
        sizes.push((name, len));
    }
    sizes
}

/// For profiling one contender (`perf`, `valgrind --tool=callgrind`):
/// `COMPARE_ONLY=ours` runs only its throughput, with `COMPARE_TASKS` tasks
/// (64) for `COMPARE_SLICES` slices of 0.4 s (15), and prints the hits. Two
/// callgrind runs with different slice counts give instructions per hit:
/// the difference of the totals over the difference of the hits.
///
/// It runs on the main runtime's two workers; with `COMPARE_WORKERS=1`, on a
/// runtime of one worker, as the one-worker pass does.
///
/// A list (`COMPARE_ONLY=floor,ours`) runs those contenders' slices in
/// turn (the order reversed every other round) and prints each one's rate
/// over the first's: a ratio of two contenders alone, measured in the same
/// stretch of time (the machine's speed drifts by tens of percent over
/// seconds, so separate runs do not compare).
async fn only_one(bench: &Arc<Bench>, only: &str) {
    let who: Vec<Contender> = only
        .split(',')
        .map(|name| {
            CONTENDERS
                .into_iter()
                .find(|c| c.short() == name)
                .unwrap_or_else(|| {
                    let names: Vec<_> = CONTENDERS.iter().map(|c| c.short()).collect();
                    panic!("COMPARE_ONLY is one or more of {names:?}, separated by commas")
                })
        })
        .collect();
    let var = |name: &str, default: usize| {
        std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
    };
    let (tasks, slices) = (var("COMPARE_TASKS", 64), var("COMPARE_SLICES", 15));
    let mut totals = vec![(0, Duration::ZERO, Duration::ZERO); who.len()];
    for slice in 0..slices {
        for k in 0..who.len() {
            let i = if slice % 2 == 0 { k } else { who.len() - 1 - k };
            let (h, t, c) = throughput_slice(bench, who[i], tasks).await;
            let (hits, took, cpu) = &mut totals[i];
            (*hits, *took, *cpu) = (*hits + h, *took + t, *cpu + c);
        }
    }
    let rate = |(hits, took, _): (u64, Duration, Duration)| hits as f64 / took.as_secs_f64();
    for (c, &(hits, took, cpu)) in who.iter().zip(&totals) {
        println!(
            "{}: {hits} hits with {tasks} tasks, {:.0} hits/s ({:.3}x the first), {:.1} µs of CPU per hit",
            c.name(),
            rate((hits, took, cpu)),
            rate((hits, took, cpu)) / rate(totals[0]),
            cpu.as_secs_f64() * 1e6 / hits as f64
        );
    }
}

fn main() {
    // `cargo test` runs bench targets without `--bench`: only measure when
    // asked to.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stolen, began) = (steal(), Instant::now());
    let server = RedisServer::start();
    let url = server.url();
    URL.set(url.clone()).unwrap();
    rt.block_on(async {
        let bench = Arc::new(Bench::connect(&url).await);
        let mut conn = bench.redis.clone();
        let json = serde_json::to_vec(&Article::sample(WARM_ID)).unwrap();
        let _: () = conn.set(FLOOR_KEY, &json).await.unwrap();
        // Warm every contender's entry; each must load exactly once.
        for who in CONTENDERS.into_iter().rev() {
            LOADS.store(0, Ordering::SeqCst);
            for _ in 0..3 {
                assert_eq!(
                    bench.read(who, &mut conn, WARM_ID).await,
                    Article::sample(WARM_ID)
                );
            }
            assert!(LOADS.load(Ordering::SeqCst) <= 1, "{} is warm", who.name());
        }

        println!("value: `Article` as JSON, {} bytes", json.len());
        println!();
        println!("| stored under | bytes |");
        println!("|---|---|");
        for (name, len) in value_sizes(&mut conn).await {
            println!("| `{name}` | {len} |");
        }
        println!();

        if let Ok(only) = std::env::var("COMPARE_ONLY") {
            if only == "invalidation" {
                let tag = report_invalidation(&url, &mut conn).await;
                println!("tag invalidation vs the DEL pipeline, as the caller sees it: {tag:.2}x");
                return;
            }
            if std::env::var("COMPARE_WORKERS").is_ok_and(|w| w == "1") {
                // As the one-worker pass runs: its own runtime, thread,
                // connection and caches (the entries are warm already).
                let url = url.clone();
                return std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async { only_one(&Arc::new(Bench::connect(&url).await), &only).await })
                })
                .join()
                .unwrap();
            }
            return only_one(&bench, &only).await;
        }
        let (lat, bare) = latency_apart(&url);
        let t16 = throughput(&bench, &CONTENDERS, 16).await;
        let t64 = throughput(&bench, &CONTENDERS, 64).await;
        let [one16, one64] = throughput_one_worker(&url);
        let mut storms = Vec::new();
        for (i, &who) in CONTENDERS.iter().enumerate() {
            storms.push(match who {
                Contender::Floor | Contender::FloorAgain => None,
                _ => Some(stampede(&bench, who, 1_000 + i as u64).await),
            });
        }
        let stats = [bench.ours.cache.stats(), bench.two_tiers.cache.stats()];
        let index = |who: Contender| CONTENDERS.iter().position(|&c| c == who).unwrap();
        let (floor, again, ours, two_tiers) = (
            index(Contender::Floor),
            index(Contender::FloorAgain),
            index(Contender::Ours),
            index(Contender::TwoTiers),
        );

        println!(
            "| contender | p50 µs | p99 µs | hits/s, 16 tasks | hits/s, 64 tasks | client CPU µs per hit, 16 / 64 tasks | loader runs, {STAMPEDE_TASKS} tasks on a cold key | until all {STAMPEDE_TASKS} had the value |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let p50 = |i: usize| quantile(&lat[i], 0.5).as_secs_f64();
        let p99 = |i: usize| quantile(&lat[i], 0.99).as_secs_f64();
        for (i, who) in CONTENDERS.iter().enumerate() {
            let storm = storms[i].map_or("n/a".to_owned(), |(n, _)| n.to_string());
            let storm_time = storms[i].map_or("n/a".to_owned(), |(_, t)| {
                format!("{:.0} ms", t.as_secs_f64() * 1e3)
            });
            println!(
                "| {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} / {:.1} | {} | {} |",
                who.name(),
                p50(i) * 1e6,
                p99(i) * 1e6,
                t16[i].0,
                t64[i].0,
                t16[i].1,
                t64[i].1,
                storm,
                storm_time,
            );
        }
        println!();
        // Ratios: latency and CPU, contender / reference (above 1: slower);
        // throughput, contender / reference (below 1: slower).
        for (reference, label) in [(0, "the floor"), (2, "the hand-written cache-aside")] {
            println!(
                "| vs {label} | p50 | p99 | hits/s, 16 tasks | hits/s, 64 tasks | CPU per hit, 16 / 64 tasks |"
            );
            println!("|---|---|---|---|---|---|");
            for (i, who) in CONTENDERS.iter().enumerate() {
                if i == reference {
                    continue;
                }
                println!(
                    "| {} | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {:.2}x / {:.2}x |",
                    who.name(),
                    p50(i) / p50(reference),
                    p99(i) / p99(reference),
                    t16[i].0 / t16[reference].0,
                    t64[i].0 / t64[reference].0,
                    t16[i].1 / t16[reference].1,
                    t64[i].1 / t64[reference].1,
                );
            }
            println!();
        }
        println!(
            "With one worker thread (the client on one thread, the server on the other core; see `throughput_one_worker`):"
        );
        println!();
        println!(
            "| contender | hits/s, 16 tasks | hits/s, 64 tasks | vs the floor, 16 / 64 tasks | client CPU µs per hit, 16 / 64 tasks |"
        );
        println!("|---|---|---|---|---|");
        let one_floor = ONE_WORKER
            .iter()
            .position(|&c| c == Contender::Floor)
            .unwrap();
        for (i, who) in ONE_WORKER.iter().enumerate() {
            println!(
                "| {} | {:.0} | {:.0} | {:.2}x / {:.2}x | {:.1} / {:.1} |",
                who.name(),
                one16[i].0,
                one64[i].0,
                one16[i].0 / one16[one_floor].0,
                one64[i].0 / one64[one_floor].0,
                one16[i].1,
                one64[i].1,
            );
        }
        println!();
        for (name, s) in ["Redis", "two tiers"].iter().zip(&stats) {
            println!(
                "`#[cached]`, {name}: hits {}, local hits {}, misses {}, coalesced {}, store errors {}",
                s.hits, s.local_hits, s.misses, s.coalesced, s.store_errors
            );
        }
        println!();

        let tag = report_invalidation(&url, &mut conn).await;
        let targets = Targets {
            p50: p50(ours) / p50(floor),
            t16: t16[ours].0 / t16[floor].0,
            t64: t64[ours].0 / t64[floor].0,
            cpu: (t16[ours].1 / t16[floor].1, t64[ours].1 / t64[floor].1),
            noise: Noise {
                p50: p50(again) / p50(floor),
                t16: t16[again].0 / t16[floor].0,
                t64: t64[again].0 / t64[floor].0,
                cpu: (t16[again].1 / t16[floor].1, t64[again].1 / t64[floor].1),
            },
            one_worker: {
                let at = |who: Contender| ONE_WORKER.iter().position(|&c| c == who).unwrap();
                let (floor, again, ours) = (
                    at(Contender::Floor),
                    at(Contender::FloorAgain),
                    at(Contender::Ours),
                );
                OneWorker {
                    t16: one16[ours].0 / one16[floor].0,
                    t64: one64[ours].0 / one64[floor].0,
                    noise: (
                        one16[again].0 / one16[floor].0,
                        one64[again].0 / one64[floor].0,
                    ),
                }
            },
            tier_p99: p99(two_tiers),
            bare_moka: (
                quantile(&bare, 0.5).as_secs_f64(),
                quantile(&bare, 0.99).as_secs_f64(),
            ),
            tag,
            stampede: [storms[ours], storms[two_tiers]].map(|s| s.map_or(0, |(n, _)| n)),
        };
        println!();
        targets.print();
        println!(
            "(CPU steal by other virtual machines during this run: {:.1} s, over {} cores for {:.0} s; a run with much of it was slowed unevenly and its ratios are noise)",
            (steal() - stolen).as_secs_f64(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            began.elapsed().as_secs_f64()
        );
    });
}

/// The figures issue 17 sets targets for, from one run.
struct Targets {
    /// `#[cached]` over Redis against the floor: p50, hits/s with 16 and 64
    /// tasks, client CPU per hit with 16 / 64 tasks.
    p50: f64,
    t16: f64,
    t64: f64,
    cpu: (f64, f64),
    /// The same ratios for the floor against itself.
    noise: Noise,
    /// Throughput with one worker thread.
    one_worker: OneWorker,
    /// A two-tier hit's p99, seconds.
    tier_p99: f64,
    /// A bare moka get of the same value in the same rounds: p50, p99.
    bare_moka: (f64, f64),
    /// Invalidating the tag against the `DEL` pipeline, as the caller sees it.
    tag: f64,
    /// Loader runs for the cold-key stampede: Redis, two tiers.
    stampede: [u64; 2],
}

/// The floor's second measurement over its first, in the same run: how far
/// identical code lands from itself, the yardstick for the ratios above.
struct Noise {
    p50: f64,
    t16: f64,
    t64: f64,
    cpu: (f64, f64),
}

/// `#[cached]` over Redis against the floor with one worker thread: hits/s
/// with 16 and 64 tasks, and the floor against itself (16, 64).
struct OneWorker {
    t16: f64,
    t64: f64,
    noise: (f64, f64),
}

impl Targets {
    /// One line per target: met or missed, with the figure.
    fn print(&self) {
        let line = |met: bool, what: &str, figure: String| {
            println!(
                "target {}: {what}: {figure}",
                if met { "met" } else { "missed" }
            );
        };
        println!("Targets (issue 17), this run:");
        println!();
        line(
            self.p50 <= 1.05,
            "Redis hit p50 <= 1.05x the floor",
            format!(
                "{:.2}x (the floor against itself, this run: {:.2}x)",
                self.p50, self.noise.p50
            ),
        );
        line(
            self.one_worker.t16 >= 0.95,
            "Redis hit throughput, 16 tasks, >= 0.95x the floor (judged with one worker)",
            format!(
                "{:.2}x with one worker (the floor against itself: {:.2}x); {:.2}x with two (the floor against itself: {:.2}x)",
                self.one_worker.t16, self.one_worker.noise.0, self.t16, self.noise.t16
            ),
        );
        line(
            self.one_worker.t64 >= 0.95,
            "Redis hit throughput, 64 tasks, >= 0.95x the floor (judged with one worker)",
            format!(
                "{:.2}x with one worker (the floor against itself: {:.2}x); {:.2}x with two (the floor against itself: {:.2}x)",
                self.one_worker.t64, self.one_worker.noise.1, self.t64, self.noise.t64
            ),
        );
        println!(
            "(client CPU per hit vs the floor, two workers, 16 / 64 tasks: {:.2}x / {:.2}x, the floor against itself {:.2}x / {:.2}x; instructions per hit are counted with callgrind, see docs/BENCHMARKS.md)",
            self.cpu.0, self.cpu.1, self.noise.cpu.0, self.noise.cpu.1
        );
        line(
            self.tier_p99 < 2e-6,
            "two-tier hit p99 below 2 us",
            format!("{:.2} us", self.tier_p99 * 1e6),
        );
        println!(
            "(a bare moka get of the same value, key formatted per call, same rounds: p50 {:.2} us, p99 {:.2} us)",
            self.bare_moka.0 * 1e6,
            self.bare_moka.1 * 1e6
        );
        println!(
            "(an in-process hit against a bare moka get is measured by `cargo bench -p benchmarks --bench hit_path`)"
        );
        line(
            self.tag <= 1.5,
            "tag invalidation of 10,000 entries <= 1.5x the DEL pipeline",
            format!("{:.2}x", self.tag),
        );
        line(
            self.stampede == [1, 1],
            "stampede: one loader run for 1,000 cold callers",
            format!(
                "{} (Redis), {} (two tiers)",
                self.stampede[0], self.stampede[1]
            ),
        );
    }
}

/// Runs the tag invalidation against the pipelines and prints its tables;
/// returns the tag's time over the `DEL` pipeline's, as the caller sees it.
async fn report_invalidation(url: &str, conn: &mut MultiplexedConnection) -> f64 {
    let [tag, del, unlink] = invalidation(url, conn).await;
    println!(
        "Removing {TAG_ENTRIES} entries of 1 KB ({TAG_ROUNDS} rounds each, refilled between):"
    );
    println!();
    println!(
        "| how | each round, ms | median ms | vs the tag | server time, median ms | server vs the tag |"
    );
    println!("|---|---|---|---|---|---|");
    let median = |t: &[Removal], server: bool| {
        let mut t: Vec<Duration> = t
            .iter()
            .map(|r| if server { r.server } else { r.client })
            .collect();
        t.sort();
        t[t.len() / 2]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (tag_client, tag_server) = (median(&tag, false), median(&tag, true));
    for (name, t) in [
        ("`cache.invalidate().tag(\"big\")` (one script call)", &tag),
        ("pipeline of 10,000 `DEL`", &del),
        ("pipeline of 10,000 `UNLINK`", &unlink),
    ] {
        let each: Vec<String> = t.iter().map(|r| format!("{:.1}", ms(r.client))).collect();
        println!(
            "| {name} | {} | {:.1} | {:.2}x | {:.1} | {:.2}x |",
            each.join(", "),
            ms(median(t, false)),
            ms(median(t, false)) / ms(tag_client),
            ms(median(t, true)),
            ms(median(t, true)) / ms(tag_server),
        );
    }
    println!();
    println!("Inside the server, the tag invalidation's last round (commands the script called):");
    println!();
    println!("| command | calls | ms |");
    println!("|---|---|---|");
    for (name, calls, usec) in &tag[tag.len() - 1].commands {
        println!("| `{name}` | {calls} | {:.1} |", *usec as f64 / 1e3);
    }
    ms(tag_client) / ms(median(&del, false))
}
