use cache_runtime::{Cache, cached};

// No copy to answer with: neither `stale`, `early` nor `fail_safe`.
#[cached(key = "a:{id}", soft_timeout = "100ms")]
async fn a(id: u64) -> Result<u64, String> {
    Ok(id)
}

// Past the hard timeout the loader is gone: a later soft timeout never acts.
#[cached(key = "b:{id}", fail_safe = "1h", soft_timeout = "2s", hard_timeout = "1s")]
async fn b(id: u64) -> Result<u64, std::io::Error> {
    Ok(id)
}

// The body runs on after the call: it cannot borrow a `&mut` argument.
#[cached(key = "c:{id}", stale = "1m", soft_timeout = "100ms")]
async fn c(id: u64, seen: &mut Vec<u64>) -> u64 {
    seen.push(id);
    id
}

// An `impl Trait` behind a reference has no owned form to name.
#[cached(key = "f:{id}", stale = "1m", soft_timeout = "100ms")]
async fn f(id: u64, name: &impl std::fmt::Display) -> String {
    format!("{name}{id}")
}

#[derive(Clone)]
struct Repo {
    cache: Cache,
}

impl Repo {
    // ... nor `&mut self`.
    #[cached(cache = self.cache, key = "d:{id}", stale = "1m", soft_timeout = "100ms")]
    async fn d(&mut self, id: u64) -> u64 {
        id
    }
}

// A repository the body gets a clone of must be `Clone`.
struct Unclonable {
    cache: Cache,
}

impl Unclonable {
    #[cached(cache = self.cache, key = "e:{id}", stale = "1m", soft_timeout = "100ms")]
    async fn e(&self, id: u64) -> u64 {
        let _ = &self.cache;
        id
    }
}

fn main() {}
