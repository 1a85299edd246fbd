//! Timing the contenders: latency, throughput (with two workers and with
//! one), CPU time and steal, and the stampede.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::contenders::{Article, Bench, CONTENDERS, Contender, LOADS, WARM_ID};

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
pub(crate) const STAMPEDE_TASKS: usize = 1_000;

pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
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
pub(crate) fn latency_apart(url: &str) -> (Vec<Vec<Duration>>, Vec<Duration>) {
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
pub(crate) fn steal() -> Duration {
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
pub(crate) async fn throughput_slice(
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
pub(crate) async fn throughput(
    bench: &Arc<Bench>,
    who: &[Contender],
    tasks: usize,
) -> Vec<(f64, f64)> {
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
pub(crate) const ONE_WORKER: [Contender; 4] = [
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
/// 0.92x to 1.06x of itself over eight runs (docs/BENCHMARKS.md, tenth part
/// of issue 17): quieter, not quiet enough to resolve 5% in every run.
pub(crate) fn throughput_one_worker(url: &str) -> [Vec<(f64, f64)>; 2] {
    on_one_worker(url, async |bench| {
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
}

/// Runs `run` on a runtime of one worker, on a thread of its own, with its
/// own connection and caches (the entries are warm already).
pub(crate) fn on_one_worker<T: Send + 'static>(
    url: &str,
    run: impl AsyncFnOnce(Arc<Bench>) -> T + Send + 'static,
) -> T {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = benchmarks::runtime(1);
        rt.block_on(async { run(Arc::new(Bench::connect(&url).await)).await })
    })
    .join()
    .unwrap()
}

/// Loader invocations, and the time until every task had its value, when
/// `STAMPEDE_TASKS` tasks read one cold key through `who` at once.
pub(crate) async fn stampede(bench: &Arc<Bench>, who: Contender, id: u64) -> (u64, Duration) {
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
