//! A tag of `TAG_ENTRIES` entries invalidated in one call, against
//! pipelines of `DEL`s and `UNLINK`s, with the server's own time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheOptions, Links};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use crate::contenders::{Article, redis_cache};

/// Entries under the one tag invalidated at once.
const TAG_ENTRIES: usize = 10_000;
const TAG_ROUNDS: usize = 9;

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

/// Runs the tag invalidation against the pipelines and prints its tables;
/// returns the tag's time over the `DEL` pipeline's, as the caller sees it.
pub(crate) async fn report_invalidation(url: &str, conn: &mut MultiplexedConnection) -> f64 {
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
