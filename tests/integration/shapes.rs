//! Every function shape the macros support, exercised at run time (the UI
//! pass cases prove they compile on their own).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use cache_runtime::{Cache, cached, invalidates};
use serde::{Serialize, de::DeserializeOwned};

static SQUARES: AtomicU32 = AtomicU32::new(0);

/// A free function with the default key (module, name, arguments), the cache
/// passed as an argument and left out of the key.
#[cached(cache = cache, ttl = 60)]
async fn square(cache: &Cache, x: u64) -> u64 {
    SQUARES.fetch_add(1, Ordering::SeqCst);
    x * x
}

#[tokio::test]
async fn free_function_with_the_default_key() {
    let cache = Cache::in_memory();
    assert_eq!(square(&cache, 3).await, 9);
    assert_eq!(square(&cache, 3).await, 9);
    assert_eq!(square(&cache, 4).await, 16);
    assert_eq!(SQUARES.load(Ordering::SeqCst), 2);
    // The default key is `module::function@<type tag>:args`.
    let tag = cache_runtime::__private::type_tag(&[std::any::type_name::<u64>()]);
    let key = format!("{}::square{tag}:3", module_path!());
    assert_eq!(
        cache.get::<u64>(&key).await,
        Some(9),
        "default key is module::function@types:args"
    );
    assert_eq!(
        cache
            .delete_pattern(&format!("{}::square@*:4", module_path!()))
            .await
            .unwrap(),
        1
    );
}

static UNCACHED: AtomicU32 = AtomicU32::new(0);

/// No `cache = ...` and no default installed in this test binary: the body
/// runs every time and nothing fails.
#[cached(key = "uncached:{x}")]
async fn without_a_default(x: u32) -> Result<u32, String> {
    UNCACHED.fetch_add(1, Ordering::SeqCst);
    Ok(x)
}

#[tokio::test]
async fn without_a_default_cache_the_body_runs() {
    assert!(cache_runtime::default_cache().is_none());
    assert_eq!(without_a_default(1).await, Ok(1));
    assert_eq!(without_a_default(1).await, Ok(1));
    assert_eq!(UNCACHED.load(Ordering::SeqCst), 2);
}

struct Counter {
    cache: Cache,
    calls: u32,
}

impl Counter {
    /// `&mut self`: the cache handle is cloned before the body takes `self`.
    #[cached(cache = self.cache, key = "counter:{step}")]
    async fn advance(&mut self, step: u32) -> u32 {
        self.calls += 1;
        self.calls * step
    }

    /// `self: Arc<Self>`.
    #[cached(cache = self.cache, key = "shared:{id}")]
    async fn shared(self: Arc<Self>, id: u32) -> String {
        format!("{id}:{}", self.calls)
    }
}

#[tokio::test]
async fn methods_taking_self_mutably_or_by_arc() {
    let mut counter = Counter {
        cache: Cache::in_memory(),
        calls: 0,
    };
    assert_eq!(counter.advance(10).await, 10);
    assert_eq!(counter.advance(10).await, 10);
    assert_eq!(counter.calls, 1);
    let counter = Arc::new(counter);
    assert_eq!(counter.clone().shared(5).await, "5:1");
    assert_eq!(counter.cache.stats().hits, 1);
}

trait Users {
    async fn name(&self, id: u32) -> Result<String, String>;
    async fn rename(&self, id: u32, name: &str) -> Result<(), String>;
}

#[async_trait]
trait BoxedUsers {
    async fn name(&self, id: u32) -> Result<String, String>;
    async fn rename(&self, id: u32, name: &str) -> Result<(), String>;
}

struct UserRepo {
    cache: Cache,
    loads: AtomicU32,
}

impl Users for UserRepo {
    #[cached(cache = self.cache, key = "user:{id}")]
    async fn name(&self, id: u32) -> Result<String, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Ok(format!("user {id}"))
    }

    #[invalidates(cache = self.cache, keys = ["user:{id}"])]
    async fn rename(&self, id: u32, name: &str) -> Result<(), String> {
        let _ = (id, name);
        Ok(())
    }
}

#[async_trait]
impl BoxedUsers for UserRepo {
    #[cached(cache = self.cache, key = "boxed-user:{id}", ttl = "1m")]
    async fn name(&self, id: u32) -> Result<String, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if id == 0 {
            return Err("no user 0".into());
        }
        Ok(format!("user {id}"))
    }

    #[invalidates(cache = self.cache, keys = ["boxed-user:{id}"])]
    async fn rename(&self, id: u32, name: &str) -> Result<(), String> {
        let _ = name;
        Ok(())
    }
}

#[tokio::test]
async fn trait_impls_native_and_async_trait() {
    let repo = UserRepo {
        cache: Cache::in_memory(),
        loads: AtomicU32::new(0),
    };
    assert_eq!(Users::name(&repo, 1).await.unwrap(), "user 1");
    assert_eq!(Users::name(&repo, 1).await.unwrap(), "user 1");
    assert_eq!(repo.loads.load(Ordering::SeqCst), 1);
    Users::rename(&repo, 1, "x").await.unwrap();
    Users::name(&repo, 1).await.unwrap();
    assert_eq!(repo.loads.load(Ordering::SeqCst), 2);

    let boxed: &dyn BoxedUsers = &repo;
    assert_eq!(boxed.name(2).await.unwrap(), "user 2");
    assert_eq!(boxed.name(2).await.unwrap(), "user 2");
    assert_eq!(repo.loads.load(Ordering::SeqCst), 3);
    assert!(boxed.name(0).await.is_err());
    assert!(boxed.name(0).await.is_err());
    assert_eq!(
        repo.loads.load(Ordering::SeqCst),
        5,
        "an early `return Err` is not cached"
    );
    boxed.rename(2, "y").await.unwrap();
    boxed.name(2).await.unwrap();
    assert_eq!(repo.loads.load(Ordering::SeqCst), 6);
}

/// A generic function: the stored type is the caller's choice.
#[cached(cache = cache, key = "generic:{id}")]
async fn load_as<T: Serialize + DeserializeOwned + From<u32>>(cache: &Cache, id: u32) -> Option<T> {
    Some(T::from(id * 2))
}

struct Table<T> {
    cache: Cache,
    rows: Vec<T>,
}

impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> Table<T> {
    /// A method of a generic impl. The parameter is `'static`: the attribute
    /// cannot see the impl's bounds, and shares the value between tasks
    /// (without the bound it is a compile error at the return type:
    /// `ui/fail/generic_impl_not_static.rs`).
    #[cached(cache = self.cache, key = "row:{index}", cache_none = "10s")]
    async fn row(&self, index: usize) -> Result<Option<T>, String> {
        Ok(self.rows.get(index).cloned())
    }
}

#[tokio::test]
async fn generic_functions_and_impls() {
    let cache = Cache::in_memory();
    assert_eq!(load_as::<u64>(&cache, 4).await, Some(8));
    assert_eq!(load_as::<u64>(&cache, 4).await, Some(8));
    assert_eq!(cache.stats().hits, 1);

    let table = Table {
        cache: Cache::in_memory(),
        rows: vec!["a".to_string()],
    };
    assert_eq!(table.row(0).await, Ok(Some("a".to_string())));
    assert_eq!(table.row(5).await, Ok(None));
    assert_eq!(table.row(5).await, Ok(None));
    assert_eq!(
        table.cache.stats().hits,
        1,
        "Ok(None) is cached with cache_none"
    );
}

/// The runtime under another name, through `crate = ...` (see
/// `tests/renamed`, which knows it only as `kv`).
#[tokio::test]
async fn a_renamed_dependency() {
    let cache = Cache::in_memory();
    assert_eq!(renamed_dependency::increment(&cache, 1).await, 2);
    assert_eq!(renamed_dependency::increment(&cache, 1).await, 2);
    assert_eq!(cache.stats().hits, 1);
    renamed_dependency::forget(&cache, 1).await;
    assert_eq!(cache.get::<u32>("renamed:1").await, None);
}

/// A row shared, not copied: `Arc<T>` return types.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Row {
    id: u64,
    author_id: u64,
    body: String,
}

struct Rows {
    cache: Cache,
}

impl Rows {
    #[cached(cache = self.cache, key = "row:{id}", tags = ["author:{ret.author_id}"])]
    async fn row(&self, id: u64) -> Result<Arc<Row>, String> {
        Ok(Arc::new(Row {
            id,
            author_id: id % 3,
            body: "x".repeat(1000),
        }))
    }
}

mod shared_values {
    use super::*;
    crate::common::on_memory_redis_and_tier!(an_arc_return_is_shared_where_it_is_kept_decoded);

    /// Where the value is kept decoded in process (the in-process store,
    /// the tier), the loader's `Arc` and every hit are one allocation: no
    /// deep clone. Over Redis alone a hit decodes a value of its own.
    async fn an_arc_return_is_shared_where_it_is_kept_decoded(fx: crate::common::Fixture) {
        let rows = Rows {
            cache: fx.cache.clone(),
        };
        let in_process = fx._server.is_none() || {
            // A tier holds what is filled through it.
            rows.row(7).await.unwrap();
            fx.cache.in_local_tier("row:7")
        };
        let first = rows.row(1).await.unwrap();
        let second = rows.row(1).await.unwrap();
        let third = rows.row(1).await.unwrap();
        assert_eq!(first.id, 1);
        assert_eq!(first, second);
        assert_eq!(Arc::ptr_eq(&first, &second), in_process);
        assert_eq!(Arc::ptr_eq(&second, &third), in_process);
        fx.cache.invalidate().tag("author:1").await.unwrap();
        let after = rows.row(1).await.unwrap();
        assert!(
            !Arc::ptr_eq(&after, &third),
            "loaded again once its tag went"
        );
        assert_eq!(after, third);
    }
}

/// A row big enough that holding it shows in a future's size.
type Wide = Result<[u64; 32], String>;

#[cached(cache = cache, key = "wide:{id}", ttl = 60)]
async fn wide(cache: &Cache, id: u64) -> Wide {
    Ok([id; 32])
}

/// The future of a `#[cached]` function holds the rest of a read (a box)
/// while it waits, not the value: a hit in process is returned before the
/// first `.await`. A caller's own future holds this one, and moves it
/// wherever the caller's future moves.
#[tokio::test]
async fn a_cached_function_s_future_does_not_hold_its_value() {
    let cache = Cache::in_memory();
    let call = wide(&cache, 7);
    let (future, value) = (std::mem::size_of_val(&call), std::mem::size_of::<Wide>());
    assert!(
        future < value,
        "the function's future ({future} bytes) is the size of its value ({value})"
    );
    assert_eq!(call.await, Ok([7; 32]));
    assert_eq!(wide(&cache, 7).await, Ok([7; 32]), "a hit in process");
}

/// The same for `get_or_load`: its future holds the rest of a read, not
/// the value.
#[tokio::test]
async fn get_or_load_s_future_does_not_hold_its_value() {
    let cache = Cache::in_memory();
    let options = cache_runtime::CacheOptions::new("wide");
    let call = cache.get_or_load("wide:8", &options, || async { Wide::Ok([8; 32]) });
    let (future, value) = (std::mem::size_of_val(&call), std::mem::size_of::<Wide>());
    assert!(
        future < value,
        "get_or_load's future ({future} bytes) is the size of its value ({value})"
    );
    assert_eq!(call.await, Ok([8; 32]));
}
