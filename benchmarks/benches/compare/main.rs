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
//!
//! The contenders are in `contenders`, the timing in `measure`, the tag
//! invalidation in `invalidation`; this file runs them and reports.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use integration_tests::RedisServer;
use redis::AsyncCommands;

mod contenders;
mod invalidation;
mod measure;

use contenders::{
    Article, Bench, CONTENDERS, Contender, FLOOR_KEY, LOADS, URL, WARM_ID, value_sizes,
};
use invalidation::report_invalidation;
use measure::{
    ONE_WORKER, STAMPEDE_TASKS, latency_apart, on_one_worker, quantile, stampede, steal,
    throughput, throughput_one_worker, throughput_slice,
};

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
    if !benchmarks::measuring() {
        return;
    }
    let rt = benchmarks::runtime(2);
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
                return on_one_worker(&url, async move |bench| only_one(&bench, &only).await);
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
