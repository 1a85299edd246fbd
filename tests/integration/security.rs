//! Security: ACL users and TLS through the URL, two applications kept apart
//! by their namespaces, and no command that blocks the server.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, CacheOptions, Links};
use integration_tests::{RedisServer, wait_until};

const OPTS: CacheOptions = CacheOptions::new("security");

/// The call timeout of the caches that run [`workload`] over TLS. The
/// workload asserts that every second read is a hit, and a read that times
/// out falls back to the body (a debug build's TLS on a loaded machine is
/// slow). These tests are about certificates, not timeouts: the bound is
/// generous.
const TLS_WORKLOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads `key` (tagged `tag`) through `cache`, counting loader runs.
async fn load(cache: &Cache, runs: &AtomicU32, key: &str, tag: &str) -> u32 {
    let tag = tag.to_owned();
    cache
        .get_or_load_tagged(
            key,
            &OPTS,
            |_| Links::new().tag(tag),
            || async { runs.fetch_add(1, Ordering::SeqCst) + 1 },
        )
        .await
}

/// Runs a workload touching every kind of name and command the cache uses:
/// fills with tags and dependencies, hits, key / tag / pattern invalidations,
/// a version bump, a published event, a user lock, and (with a tier) the
/// pub/sub coherence channel. Returns the loader runs.
async fn workload(cache: &Cache) -> u32 {
    let runs = AtomicU32::new(0);
    for id in 0..5 {
        load(cache, &runs, &format!("post:{id}"), "author:7").await;
        load(cache, &runs, &format!("post:{id}"), "author:7").await;
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        5,
        "the second reads were hits ({:?})",
        cache.stats()
    );
    let dependent: u32 = cache
        .get_or_load_tagged(
            "feed:7",
            &OPTS,
            |_| Links::new().depends_on("post:1"),
            || async { 70 },
        )
        .await;
    assert_eq!(dependent, 70);
    cache
        .invalidate()
        .key("post:1")
        .bump("posts")
        .publish("post:updated")
        .await
        .unwrap();
    assert_eq!(cache.get::<u32>("feed:7").await, None, "cascaded");
    cache.invalidate().tag("author:7").await.unwrap();
    assert_eq!(cache.get::<u32>("post:2").await, None);
    load(cache, &runs, "search:a:1", "s").await;
    assert_eq!(cache.delete_pattern("search:*").await.unwrap(), 1);
    let lock = cache
        .try_lock("nightly", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("free");
    assert!(lock.release().await.unwrap());
    runs.load(Ordering::SeqCst)
}

/// Waits until the cache's connection is up (a TLS handshake in a debug
/// build can take longer than the first call's timeout).
async fn connected(cache: &Cache) {
    let runs = AtomicU32::new(0);
    wait_until(
        "the cache stores and hits",
        Duration::from_secs(10),
        async || {
            let before = runs.load(Ordering::SeqCst);
            load(cache, &runs, "warm-up", "w").await;
            load(cache, &runs, "warm-up", "w").await;
            runs.load(Ordering::SeqCst) == before + 1 || runs.load(Ordering::SeqCst) == before
        },
    )
    .await;
    cache.invalidate().key("warm-up").await.unwrap();
}

/// `ACL LOG` entries: every command, key or channel a user was denied.
fn acl_log(server: &RedisServer) -> Vec<redis::Value> {
    redis::cmd("ACL")
        .arg("LOG")
        .query(&mut server.conn())
        .expect("ACL LOG")
}

/// A server with a user `app` that may touch only the names and channels of
/// namespace `app` and may run no `@dangerous` command (`KEYS`, `FLUSHALL`,
/// `FLUSHDB`, `DEBUG`, `CONFIG`, ...) but `INFO` (with `info`), and a user
/// `bare` confined the same way without `INFO`.
fn server_with_confined_user() -> RedisServer {
    RedisServer::start_with(|_, _| {
        let confined = |name: &str, info: bool| {
            let mut rule = vec![
                "--user",
                name,
                "on",
                ">s3cret",
                "~app:*",
                "~app#*",
                "&app:*",
                "&app#*",
                "+@all",
                "-@dangerous",
            ];
            if info {
                rule.push("+info");
            }
            rule.into_iter().map(String::from).collect::<Vec<_>>()
        };
        [confined("app", true), confined("bare", false)].concat()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_confined_to_its_namespace_is_enough() {
    let server = server_with_confined_user();
    let url = format!("redis://app:s3cret@127.0.0.1:{}/", server.port());
    let cache = Cache::builder()
        .redis_url(url)
        .namespace("app")
        .local_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_until("subscribed", Duration::from_secs(10), async || {
        cache.listening()
    })
    .await;
    workload(&cache).await;
    let log = acl_log(&server);
    assert_eq!(
        log,
        Vec::<redis::Value>::new(),
        "no command, key or channel outside the namespace was even tried"
    );
    assert_eq!(
        cache.stats().store_errors,
        0,
        "every call the cache made was allowed"
    );
    assert!(cache.stats().hits >= 5);
    let health = cache.health();
    assert_eq!(health.server_identity, Some(true), "{health:?}");
    assert!(health.eviction.is_some(), "read with INFO: {health:?}");
}

/// The same user without `+info`: every feature works, but the scripts
/// cannot read the server's identity (so only a server that lost all its
/// data starts a new epoch, not one that restarted from a snapshot), nor
/// its eviction settings; `health()` says so, and `INFO` is the only thing
/// that was denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_denied_info_works_and_health_says_what_is_not_checked() {
    let server = server_with_confined_user();
    let url = format!("redis://bare:s3cret@127.0.0.1:{}/", server.port());
    let cache = Cache::builder()
        .redis_url(url)
        .namespace("app")
        .local_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_until("subscribed", Duration::from_secs(10), async || {
        cache.listening()
    })
    .await;
    assert_eq!(
        workload(&cache).await,
        6,
        "five posts and a search, each loaded once"
    );
    assert_eq!(cache.stats().store_errors, 0);
    let health = cache.health();
    assert_eq!(health.server_identity, Some(false), "{health:?}");
    assert_eq!(health.eviction, None, "{health:?}");
    for entry in acl_log(&server) {
        let text = format!("{entry:?}").to_lowercase();
        assert!(text.contains("info"), "only INFO was denied: {text}");
    }
}

#[tokio::test]
async fn a_wrong_password_degrades_to_the_body() {
    let server = server_with_confined_user();
    let url = format!("redis://app:wrong@127.0.0.1:{}/", server.port());
    let cache = Cache::builder()
        .redis_url(url)
        .namespace("app")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    assert_eq!(load(&cache, &runs, "post:1", "t").await, 1);
    assert_eq!(load(&cache, &runs, "post:1", "t").await, 2, "not cached");
    assert!(cache.stats().store_errors >= 1);
    assert_eq!(cache.invalidate().key("post:1").run_reported().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_keep_two_applications_apart() {
    let server = RedisServer::start();
    let app = |ns: &str| {
        Cache::builder()
            .redis_url(server.url())
            .namespace(ns)
            .local_ttl(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    let (a, b) = (app("shop"), app("blog"));
    for cache in [&a, &b] {
        wait_until("subscribed", Duration::from_secs(10), async || {
            cache.listening()
        })
        .await;
    }
    let b_runs = AtomicU32::new(0);
    for id in 0..5 {
        load(&b, &b_runs, &format!("post:{id}"), "author:7").await;
    }
    // A does everything it can, with the very same keys and tags, and
    // publishes events of its own and events naming B's entries on its
    // own channel.
    workload(&a).await;
    a.invalidate().tags(["author:7", "s"]).await.unwrap();
    let a_runs = AtomicU32::new(0);
    load(&a, &a_runs, "post:3", "x").await;
    load(&a, &a_runs, "post:4", "x").await;
    assert_eq!(
        a.delete_pattern("*").await.unwrap(),
        2,
        "A's own two entries"
    );
    let event = r#"{"v":1,"namespace":"shop","event":"post:updated","keys":["post:3"],"tags":["author:7"],"patterns":["*"],"ts":1}"#;
    let _: i64 = redis::cmd("PUBLISH")
        .arg("shop:post:updated")
        .arg(event)
        .query(&mut server.conn())
        .unwrap();
    // An event naming B's namespace but sent on A's channel is ignored too.
    let forged = event.replace(r#""namespace":"shop""#, r#""namespace":"blog""#);
    let _: i64 = redis::cmd("PUBLISH")
        .arg("shop:post:updated")
        .arg(forged)
        .query(&mut server.conn())
        .unwrap();
    wait_until("A applied its event", Duration::from_secs(5), async || {
        a.stats().events_applied >= 1
    })
    .await;

    for id in 0..5 {
        let key = format!("post:{id}");
        assert!(b.in_local_tier(&key), "{key} still in B's tier");
        load(&b, &b_runs, &key, "author:7").await;
    }
    assert_eq!(b_runs.load(Ordering::SeqCst), 5, "every B read still hits");
    assert_eq!(b.stats().events_applied, 0);
    assert_eq!(b.stats().coherence_applied, 0, "A's messages are not B's");
    // And the other way round, B's invalidations leave A alone.
    load(&a, &a_runs, "post:1", "author:7").await;
    b.invalidate().key("post:1").tag("author:7").await.unwrap();
    load(&a, &a_runs, "post:1", "author:7").await;
    assert_eq!(a_runs.load(Ordering::SeqCst), 3, "the last read was a hit");
}

/// A private CA and a server certificate for `127.0.0.1` (made with the
/// `openssl` command), in `dir`: `ca.crt`, `server.crt`, `server.key`.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (.ci/run installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
}

/// A server that also listens with TLS; returns it and its TLS port.
fn tls_server() -> (RedisServer, u16) {
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let server = RedisServer::start_with(|_, dir| {
        make_certificates(dir);
        let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            file("server.crt"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    });
    (server, tls_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_verifies_the_server_certificate() {
    let (_server, tls_port) = tls_server();
    // The CA is not trusted by this process: the connection is refused and
    // every call falls back to the body.
    let untrusted = Cache::builder()
        .redis_url(format!("rediss://127.0.0.1:{tls_port}/"))
        .namespace("app")
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    assert_eq!(load(&untrusted, &runs, "post:1", "t").await, 1);
    assert_eq!(load(&untrusted, &runs, "post:1", "t").await, 2);
    assert!(untrusted.stats().store_errors >= 1);

    // `#insecure` skips verification (tests only): the cache works over TLS.
    let insecure = Cache::builder()
        .redis_url(format!("rediss://127.0.0.1:{tls_port}/#insecure"))
        .namespace("app")
        .timeout(TLS_WORKLOAD_TIMEOUT)
        .build()
        .unwrap();
    // The subscriber's (re)connection makes the cache forget the server's
    // epoch, and a read in flight then takes its entry for one of another
    // epoch and loads: let its TLS handshake end before the workload counts.
    wait_until("subscribed over TLS", Duration::from_secs(10), async || {
        insecure.listening()
    })
    .await;
    connected(&insecure).await;
    let errors = insecure.stats().store_errors;
    workload(&insecure).await;
    assert_eq!(insecure.stats().store_errors, errors);
}

/// Run by [`rediss_with_a_trusted_ca_works`] in a child process whose
/// `SSL_CERT_FILE` names the test CA (OpenSSL's way to add a trust root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by rediss_with_a_trusted_ca_works, with SSL_CERT_FILE set"]
async fn tls_child_with_the_ca_trusted() {
    let port = std::env::var("CACHE_TEST_TLS_PORT").expect("run by the parent test");
    let cache = Cache::builder()
        .redis_url(format!("rediss://127.0.0.1:{port}/"))
        .namespace("app")
        .timeout(TLS_WORKLOAD_TIMEOUT)
        .local_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_until("subscribed over TLS", Duration::from_secs(10), async || {
        cache.listening()
    })
    .await;
    connected(&cache).await;
    let errors = cache.stats().store_errors;
    workload(&cache).await;
    assert_eq!(cache.stats().store_errors, errors);
}

#[test]
fn rediss_with_a_trusted_ca_works() {
    let (server, tls_port) = tls_server();
    let ca = server.dir().join("ca.crt");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "security::tls_child_with_the_ca_trusted",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("SSL_CERT_FILE", &ca)
        .env("CACHE_TEST_TLS_PORT", tls_port.to_string())
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
