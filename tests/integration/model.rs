//! A model of what a reader may see, checked against random programs of
//! concurrent operations, on the in-process store, on Redis, and on Redis
//! with an in-process tier.
//!
//! The "database" is four rows, each a version that every write raises by
//! one, in two groups (rows 0-1, rows 2-3). Cached reads, all through the
//! attributes: a row (tagged with its group), a group (the versions of its
//! rows, tagged), a row read under its group's version (`version =`), and a
//! page that depends on row 0 (`depends_on`). A write raises one row's
//! version (the commit) and then tells the cache, by one of: keys, the
//! group's tag, patterns, a version bump, or a write-through put (with a
//! ticket taken before the commit, as `#[cache_put]` does); every
//! write also invalidates its row's key, so a page built from row 0 goes by
//! cascade. Reads run slow loaders; operations overlap; callers give up
//! (a read or an invalidation dropped at an await); Redis is frozen
//! (`SIGSTOP`), killed and restarted empty or from a snapshot taken earlier,
//! and the subscriber's connection is killed.
//!
//! The rule checked, from the reader's side: no read returns a version of a
//! row older than one whose write had returned before the read began. With
//! one instance there is no documented window in which that may not hold
//! (`stale` serving is not used; another instance's tier is not modelled).
//! A failing program is shrunk to a minimal one.
//!
//! It runs a bounded number of programs per configuration (in CI);
//! `PROPTEST_CASES=500 cargo test -p integration-tests --test integration --
//! model --nocapture` runs more.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheOptions, Links, cached};
use integration_tests::RedisServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const ROWS: usize = 4;

/// The database: each row's version.
#[derive(Default)]
struct Db {
    rows: Mutex<[u64; ROWS]>,
}

impl Db {
    /// Reads `rows` (now), then takes `slow_ms` before answering, as a
    /// slow query would.
    async fn load(&self, rows: &[usize], slow_ms: u64) -> Vec<(usize, u64)> {
        let read: Vec<(usize, u64)> = {
            let versions = self.rows.lock().unwrap();
            rows.iter().map(|&r| (r, versions[r])).collect()
        };
        if slow_ms > 0 {
            tokio::time::sleep(Duration::from_millis(slow_ms)).await;
        }
        read
    }

    /// Commits a new version of `row`.
    fn write(&self, row: usize) -> u64 {
        let mut versions = self.rows.lock().unwrap();
        versions[row] += 1;
        versions[row]
    }
}

/// The repository under test.
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    #[cached(cache = self.cache, key = "row:{r}", ttl = 60, tags = ["group:{g}"])]
    async fn row(&self, r: usize, g: usize, slow_ms: u64) -> Vec<(usize, u64)> {
        self.db.load(&[r], slow_ms).await
    }

    #[cached(cache = self.cache, key = "group:{g}", ttl = 60, tags = ["group:{g}"])]
    async fn group(&self, g: usize, slow_ms: u64) -> Vec<(usize, u64)> {
        self.db.load(&[2 * g, 2 * g + 1], slow_ms).await
    }

    #[cached(cache = self.cache, key = "vrow:{r}", ttl = 60, tags = ["group:{g}"], version = "v:{g}")]
    async fn vrow(&self, r: usize, g: usize, slow_ms: u64) -> Vec<(usize, u64)> {
        self.db.load(&[r], slow_ms).await
    }

    #[cached(cache = self.cache, key = "page:0", ttl = 60, depends_on = ["row:0"])]
    async fn page(&self, slow_ms: u64) -> Vec<(usize, u64)> {
        self.db.load(&[0], slow_ms).await
    }

    async fn read(&self, target: Target, slow_ms: u64) -> Vec<(usize, u64)> {
        match target {
            Target::Row(r) => self.row(r, r / 2, slow_ms).await,
            Target::Group(g) => self.group(g, slow_ms).await,
            Target::VRow(r) => self.vrow(r, r / 2, slow_ms).await,
            Target::Page => self.page(slow_ms).await,
        }
    }

    /// Commits a new version of `row`, then invalidates by `via` (and the
    /// row's key, always). The version written.
    async fn write(&self, row: usize, via: Via, give_up: bool) -> (u64, bool) {
        // A write-through takes its ticket before it commits.
        let ticket = match via {
            Via::Put => Some(self.cache.ticket().await),
            _ => None,
        };
        let version = self.db.write(row);
        let g = row / 2;
        let change = self.cache.invalidate().key(format!("row:{row}"));
        let change = match via {
            Via::Keys => change.keys([format!("group:{g}"), format!("vrow:{row}")]),
            Via::Tag => change.tag(format!("group:{g}")),
            Via::Pattern => change
                .pattern(format!("group:{g}"))
                .pattern(format!("vrow:{row}*")),
            Via::Bump => change.key(format!("group:{g}")).bump(format!("v:{g}")),
            Via::Put => change
                .keys([format!("group:{g}"), format!("vrow:{row}")])
                .put_after(
                    &ticket.expect("taken above"),
                    format!("row:{row}"),
                    &vec![(row, version)],
                    &PUT,
                    Links::new().tag(format!("group:{g}")),
                ),
        };
        if give_up {
            // Dropped at its first await: it never returns.
            let _ = tokio::time::timeout(Duration::ZERO, change.run()).await;
            return (version, false);
        }
        // Returned, `Ok` or not (a failure waits in the outbox, and this
        // instance reads past the cache meanwhile).
        let _ = change.await;
        (version, true)
    }
}

const PUT: CacheOptions = CacheOptions::new("row").ttl(Duration::from_secs(60));

#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Row(usize),
    Group(usize),
    VRow(usize),
    Page,
}

impl Target {
    fn all() -> Vec<Target> {
        (0..ROWS)
            .map(Target::Row)
            .chain((0..ROWS / 2).map(Target::Group))
            .chain((0..ROWS).map(Target::VRow))
            .chain([Target::Page])
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    Keys,
    Tag,
    Pattern,
    Bump,
    Put,
}

#[derive(Debug, Clone)]
enum Op {
    /// A read whose loader answers `slow_ms` after reading the database;
    /// its caller gives up after `give_up_ms`, if given.
    Read {
        target: Target,
        slow_ms: u8,
        give_up_ms: Option<u8>,
    },
    /// A write of `row`, whose caller may give up on the invalidation.
    Write { row: usize, via: Via, give_up: bool },
    /// Waits until every operation in flight is done.
    Settle,
    /// Redis frozen (`SIGSTOP`) for this long.
    Pause(u8),
    /// Redis snapshotted (`SAVE`).
    Save,
    /// Redis killed and restarted, from the last snapshot or empty.
    Restart { from_snapshot: bool },
    /// The subscriber's connection killed (`CLIENT KILL TYPE pubsub`).
    DropSubscriber,
}

fn op(faults: bool) -> impl Strategy<Value = Op> {
    let target = prop_oneof![
        (0..ROWS).prop_map(Target::Row),
        (0..ROWS / 2).prop_map(Target::Group),
        (0..ROWS).prop_map(Target::VRow),
        Just(Target::Page),
    ];
    let via = prop_oneof![
        Just(Via::Keys),
        Just(Via::Tag),
        Just(Via::Pattern),
        Just(Via::Bump),
        Just(Via::Put),
    ];
    let read = (
        target,
        prop_oneof![Just(0u8), 1u8..5, 5u8..30],
        prop::option::weighted(0.1, 0u8..20),
    )
        .prop_map(|(target, slow_ms, give_up_ms)| Op::Read {
            target,
            slow_ms,
            give_up_ms,
        });
    let write = (0..ROWS, via, prop::bool::weighted(0.1))
        .prop_map(|(row, via, give_up)| Op::Write { row, via, give_up });
    let fault = prop_oneof![
        (5u8..60).prop_map(Op::Pause),
        Just(Op::Save),
        any::<bool>().prop_map(|from_snapshot| Op::Restart { from_snapshot }),
        Just(Op::DropSubscriber),
    ];
    let fault_weight = if faults { 1 } else { 0 };
    prop_oneof![
        12 => read,
        8 => write,
        2 => Just(Op::Settle),
        fault_weight => fault,
    ]
}

/// A program: operations, each followed by a pause (ms) before the next
/// starts (the operations themselves overlap).
fn program(faults: bool) -> impl Strategy<Value = Vec<(Op, u8)>> {
    prop::collection::vec((op(faults), prop_oneof![Just(0u8), 0u8..4]), 1..40)
}

/// What happened: reads with what they returned, writes with when they
/// returned.
#[derive(Debug, Default)]
struct History {
    reads: Vec<ReadDone>,
    writes: Vec<WriteDone>,
}

#[derive(Debug)]
struct ReadDone {
    target: Target,
    started: Instant,
    value: Vec<(usize, u64)>,
}

#[derive(Debug)]
struct WriteDone {
    row: usize,
    version: u64,
    returned: Instant,
}

impl History {
    /// The first read that returned a version older than a write that had
    /// returned before it began.
    fn stale_read(&self) -> Option<String> {
        for read in &self.reads {
            for &(row, version) in &read.value {
                let required = self
                    .writes
                    .iter()
                    .filter(|w| w.row == row && w.returned < read.started)
                    .map(|w| w.version)
                    .max()
                    .unwrap_or(0);
                if version < required {
                    return Some(format!(
                        "{:?} returned version {version} of row {row}, but version {required} had been written and had returned before it began",
                        read.target
                    ));
                }
            }
        }
        None
    }
}

/// One configuration: the store, and the server the faults act on.
struct Setup {
    server: Option<Arc<Mutex<RedisServer>>>,
    tier: bool,
    case: AtomicUsize,
}

impl Setup {
    fn cache(&self) -> Cache {
        let n = self.case.fetch_add(1, Ordering::SeqCst);
        let builder = Cache::builder()
            .namespace(format!("m{n}"))
            .jitter(0.0)
            .timeout(Duration::from_millis(200));
        let builder = match &self.server {
            None => builder,
            Some(server) => {
                let builder = builder.redis_url(server.lock().unwrap().url());
                if self.tier {
                    builder
                        .local_ttl(Duration::from_secs(60))
                        .local_grace(Duration::from_millis(300))
                } else {
                    builder.apply_events(false)
                }
            }
        };
        builder.build().unwrap()
    }

    /// Runs a fault on the server (nothing in process).
    fn fault(&self, op: &Op) {
        let Some(server) = &self.server else {
            return;
        };
        let mut server = server.lock().unwrap();
        match op {
            Op::Pause(ms) => {
                server.pause();
                std::thread::sleep(Duration::from_millis(u64::from(*ms)));
                server.resume();
            }
            Op::Save => server.save(),
            Op::Restart { from_snapshot } => {
                if !from_snapshot {
                    let _ = std::fs::remove_file(server.dir().join("dump.rdb"));
                }
                server.restart();
            }
            Op::DropSubscriber => {
                let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query(&mut server.conn());
            }
            _ => {}
        }
    }
}

async fn run(setup: &Setup, program: &[(Op, u8)]) -> Result<(), TestCaseError> {
    let repo = Arc::new(Repo {
        cache: setup.cache(),
        db: Arc::new(Db::default()),
    });
    if let Some(server) = &setup.server {
        let _ = server;
        // Start from a cache that listens (with a tier) and knows its server.
        repo.cache.ready(Duration::from_secs(5)).await;
    }
    let history = Arc::new(Mutex::new(History::default()));
    let mut in_flight = Vec::new();
    for (op, gap) in program {
        match op.clone() {
            Op::Read {
                target,
                slow_ms,
                give_up_ms,
            } => {
                let (repo, history) = (repo.clone(), history.clone());
                in_flight.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let read = repo.read(target, u64::from(slow_ms));
                    let value = match give_up_ms {
                        Some(ms) => {
                            tokio::time::timeout(Duration::from_millis(u64::from(ms)), read)
                                .await
                                .ok()
                        }
                        None => Some(read.await),
                    };
                    if let Some(value) = value {
                        history.lock().unwrap().reads.push(ReadDone {
                            target,
                            started,
                            value,
                        });
                    }
                }));
            }
            Op::Write { row, via, give_up } => {
                let (repo, history) = (repo.clone(), history.clone());
                in_flight.push(tokio::spawn(async move {
                    let (version, returned) = repo.write(row, via, give_up).await;
                    if returned {
                        history.lock().unwrap().writes.push(WriteDone {
                            row,
                            version,
                            returned: Instant::now(),
                        });
                    }
                }));
            }
            Op::Settle => {
                for task in in_flight.drain(..) {
                    task.await.expect("an operation panicked");
                }
            }
            fault => tokio::task::block_in_place(|| setup.fault(&fault)),
        }
        if *gap > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(*gap))).await;
        }
    }
    for task in in_flight.drain(..) {
        task.await.expect("an operation panicked");
    }
    // Once everything is done, every read sees every write.
    for target in Target::all() {
        let started = Instant::now();
        let value = repo.read(target, 0).await;
        history.lock().unwrap().reads.push(ReadDone {
            target,
            started,
            value,
        });
    }
    let history = history.lock().unwrap();
    match history.stale_read() {
        Some(stale) => Err(TestCaseError::fail(format!(
            "{stale}\nstats: {:?}",
            repo.cache.stats()
        ))),
        None => Ok(()),
    }
}

/// Runs `cases` programs (or `PROPTEST_CASES`) against `setup`.
fn check(setup: Setup, cases: u32, faults: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    });
    let result = runner.run(&program(faults), |program| {
        rt.block_on(run(&setup, &program))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn in_process() {
    check(
        Setup {
            server: None,
            tier: false,
            case: AtomicUsize::new(0),
        },
        64,
        false,
    );
}

#[test]
fn on_redis() {
    let _load = crate::common::one_load_at_a_time_blocking();
    check(
        Setup {
            server: Some(Arc::new(Mutex::new(RedisServer::start()))),
            tier: false,
            case: AtomicUsize::new(0),
        },
        32,
        true,
    );
}

#[test]
fn on_redis_with_a_tier() {
    let _load = crate::common::one_load_at_a_time_blocking();
    check(
        Setup {
            server: Some(Arc::new(Mutex::new(RedisServer::start()))),
            tier: true,
            case: AtomicUsize::new(0),
        },
        32,
        true,
    );
}
