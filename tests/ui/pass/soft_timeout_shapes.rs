//! `soft_timeout`: the body runs on after the call may have returned, so it
//! gets a clone of `&self` and owned copies of borrowed arguments; it reads
//! as written (`self` in closures and macros, slices, named lifetimes, a
//! native `async fn` in a trait impl).
use std::sync::Arc;

use cache_runtime::{Cache, cached};

#[derive(Clone)]
pub struct Repo {
    cache: Cache,
    prefix: Arc<str>,
}

pub trait Names {
    fn name(&self, id: u64) -> impl std::future::Future<Output = Result<String, String>> + Send;
}

impl Repo {
    #[cached(cache = self.cache, key = "greet:{who}", stale = "1m", soft_timeout = "100ms")]
    async fn greet<'a>(&self, who: &'a str, ids: &[u64]) -> String {
        let total: u64 = ids.iter().map(|id| id + self.prefix.len() as u64).sum();
        format!("{} {who} {total}", self.prefix)
    }
}

impl Names for Repo {
    #[cached(cache = self.cache, key = "name:{id}", fail_safe = "1h", soft_timeout = "100ms", hard_timeout = "2s")]
    async fn name(&self, id: u64) -> Result<String, String> {
        Ok(format!("{}{id}", self.prefix))
    }
}

#[cached(cache = cache, key = "free:{id}", early = 1.0, soft_timeout = "50ms")]
async fn free(cache: &Cache, id: u64, label: &String) -> String {
    format!("{label}{id}")
}

fn helper(id: u64) -> u64 {
    id * 2
}

// `self::` paths stay paths; a `mut` borrowed argument may be reassigned.
#[cached(cache = cache, key = "paths:{id}", stale = "1m", soft_timeout = "50ms")]
async fn paths(cache: &Cache, id: u64, mut label: &str) -> String {
    if label.is_empty() {
        label = "none";
    }
    format!("{label}{}", self::helper(id))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let repo = Repo { cache: Cache::in_memory(), prefix: Arc::from("hi") };
    assert_eq!(repo.greet("ann", &[1, 2]).await, "hi ann 7");
    assert_eq!(repo.name(3).await, Ok("hi3".to_owned()));
    assert_eq!(free(&repo.cache, 4, &"n".to_owned()).await, "n4");
    assert_eq!(paths(&repo.cache, 5, "").await, "none10");
}
