//! #[cached] and #[invalidates] inside #[async_trait] impls.
use async_trait::async_trait;
use cache_runtime::{Cache, cached, invalidates};

#[async_trait]
pub trait Users {
    async fn name(&self, id: u32) -> Result<String, String>;
    async fn rename(&self, id: u32, name: String) -> Result<(), String>;
    async fn count(&self) -> u64;
}

pub struct Repo {
    cache: Cache,
}

#[async_trait]
impl Users for Repo {
    #[cached(cache = self.cache, key = "user:{id}", ttl = "1m")]
    async fn name(&self, id: u32) -> Result<String, String> {
        Ok(format!("user {id}"))
    }

    #[invalidates(cache = self.cache, keys = ["user:{id}"], publish = "user:renamed")]
    async fn rename(&self, id: u32, name: String) -> Result<(), String> {
        drop(name);
        Ok(())
    }

    #[cached(cache = self.cache, key = "users:count")]
    async fn count(&self) -> u64 {
        7
    }
}

fn main() {}
