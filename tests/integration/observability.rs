//! What operators see: `metrics` counters and histograms (read here through
//! the Prometheus recorder's text output) and `tracing` spans (read through
//! a small capturing subscriber), on a real `redis-server`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Cache, cached, invalidates};
use integration_tests::{RedisServer, wait_until};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

struct Repo {
    cache: Cache,
}

impl Repo {
    #[cached(cache = self.cache, key = "item:{id}", name = "items.get")]
    async fn get(&self, id: u64) -> Result<u64, String> {
        Ok(id * 10)
    }

    #[invalidates(cache = self.cache, keys = ["item:{id}"])]
    async fn touch(&self, id: u64) -> Result<(), String> {
        let _ = id;
        Ok(())
    }
}

/// The value of the sample of `metric` whose labels include all of
/// `labels`, in Prometheus text.
fn sample(handle: &PrometheusHandle, metric: &str, labels: &[&str]) -> Option<f64> {
    handle.render().lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        let matches =
            name.starts_with(&format!("{metric}{{")) && labels.iter().all(|l| name.contains(l));
        matches.then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test]
async fn metrics_count_hits_misses_loads_invalidations_and_faults() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // The test runs on one thread (current-thread runtime), so a local
    // recorder sees everything, invalidation tasks included.
    let _guard = metrics::set_default_local_recorder(&recorder);

    let mut server = RedisServer::start();
    let repo = Repo {
        cache: Cache::builder()
            .redis_url(server.url())
            .namespace("obs")
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    };
    let labels = [r#"cache="obs""#, r#"name="items.get""#];
    repo.get(1).await.unwrap();
    repo.get(1).await.unwrap();
    repo.get(1).await.unwrap();
    assert_eq!(sample(&handle, "cache_misses_total", &labels), Some(1.0));
    assert_eq!(
        sample(
            &handle,
            "cache_hits_total",
            &[labels[0], labels[1], r#"source="redis""#]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&handle, "cache_load_seconds_count", &labels),
        Some(1.0)
    );
    repo.touch(1).await.unwrap();
    assert_eq!(
        sample(&handle, "cache_invalidations_total", &[labels[0]]),
        Some(1.0)
    );
    assert_eq!(
        sample(&handle, "cache_entries_removed_total", &[labels[0]]),
        Some(1.0)
    );

    server.kill();
    for _ in 0..6 {
        assert_eq!(repo.get(2).await, Ok(20), "the body answers");
    }
    let errors = sample(
        &handle,
        "cache_store_errors_total",
        &[labels[0], r#"op="read""#],
    );
    assert!(errors.is_some_and(|n| n >= 5.0), "{errors:?}");
    assert_eq!(
        sample(&handle, "cache_circuit_open", &[labels[0]]),
        Some(1.0)
    );
    server.restart();
    wait_until("the circuit closes", Duration::from_secs(10), async || {
        repo.get(3).await.unwrap();
        sample(&handle, "cache_circuit_open", &[labels[0]]) == Some(0.0)
    })
    .await;
}

/// Spans: name and recorded fields, and the stack of entered spans (the
/// test runs on one thread).
#[derive(Default, Clone)]
struct Spans(
    Arc<Mutex<Vec<Recorded>>>,
    Arc<Mutex<Vec<tracing::span::Id>>>,
);

/// A span's metadata and the fields recorded on it.
type Recorded = (&'static tracing::Metadata<'static>, HashMap<String, String>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        spans.push((attrs.metadata(), fields));
        tracing::span::Id::from_u64(spans.len() as u64)
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut spans = self.0.lock().unwrap();
        let (_, fields) = &mut spans[span.into_u64() as usize - 1];
        values.record(&mut Fields(fields));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, span: &tracing::span::Id) {
        self.1.lock().unwrap().push(span.clone());
    }
    fn exit(&self, _: &tracing::span::Id) {
        self.1.lock().unwrap().pop();
    }
    fn current_span(&self) -> tracing_core::span::Current {
        let spans = self.0.lock().unwrap();
        match self.1.lock().unwrap().last() {
            Some(id) => {
                tracing_core::span::Current::new(id.clone(), spans[id.into_u64() as usize - 1].0)
            }
            None => tracing_core::span::Current::none(),
        }
    }
}

#[tokio::test]
async fn each_read_and_invalidation_has_a_debug_span() {
    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
    let server = RedisServer::start();
    let repo = Repo {
        cache: Cache::builder()
            .redis_url(server.url())
            .namespace("spans")
            .build()
            .unwrap(),
    };
    // The callsites are shared with the other tests of this process, which
    // run on threads without a subscriber: the interest tracing caches for
    // them may be settled as "never" by one of those threads at any time
    // (rebuilding it is not atomic with respect to them). So the sequence
    // (a miss, a hit, an invalidation, on a key of its own) runs until one
    // attempt is seen whole, and that one is checked.
    let mut seen = Vec::new();
    for id in 1..=20 {
        tracing::callsite::rebuild_interest_cache();
        spans.0.lock().unwrap().clear();
        repo.get(id).await.unwrap();
        repo.get(id).await.unwrap();
        repo.touch(id).await.unwrap();
        seen = spans
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(meta, fields)| (meta.name().to_owned(), fields.clone()))
            .collect();
        let count = |name: &str| seen.iter().filter(|(n, _)| n == name).count();
        if count("cache.read") == 2 && count("cache.invalidate") == 1 {
            let key = format!("item:{id}");
            check_spans(&seen, &key);
            return;
        }
    }
    panic!("no attempt was seen whole: {seen:?}");
}

fn check_spans(spans: &[(String, HashMap<String, String>)], key: &str) {
    let reads: Vec<_> = spans.iter().filter(|(n, _)| n == "cache.read").collect();
    assert_eq!(reads.len(), 2, "{spans:?}");
    for (_, fields) in &reads {
        assert_eq!(fields["cache"], "spans");
        assert_eq!(fields["name"], "items.get");
        assert_eq!(fields["key"], key);
        assert!(fields.contains_key("store_ms"), "{fields:?}");
    }
    assert_eq!(reads[0].1["outcome"], "miss");
    assert!(reads[0].1.contains_key("load_ms"));
    assert_eq!(reads[1].1["outcome"], "hit");
    let invalidations: Vec<_> = spans
        .iter()
        .filter(|(n, _)| n == "cache.invalidate")
        .collect();
    assert_eq!(invalidations.len(), 1, "{spans:?}");
    assert_eq!(invalidations[0].1["removed"], "1");
    assert_eq!(invalidations[0].1["outcome"], "ok");
}
