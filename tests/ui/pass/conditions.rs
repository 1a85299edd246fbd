//! `condition` and `unless` on every shape: a body that moves the argument
//! the condition reads, an `Option`, an untyped closure, an `#[async_trait]`
//! impl, and `#[invalidates(condition = ...)]` over arguments and `ret`.
use async_trait::async_trait;
use cache_runtime::{Cache, cached, invalidates};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct Post {
    pub id: u64,
    pub draft: bool,
}

pub struct Repo {
    cache: Cache,
}

impl Repo {
    #[cached(cache = self.cache, key = "post:{id}", condition = id != 0, unless = |p| p.draft)]
    pub async fn get(&self, id: u64) -> Result<Post, String> {
        Ok(Post { id, draft: false })
    }

    // The body moves `name`; the condition was decided before.
    #[cached(cache = self.cache, key = "name:{name}", condition = !name.is_empty() && self.cache.enabled())]
    pub async fn by_name(&self, name: String) -> Option<Post> {
        drop(name);
        None
    }

    #[cached(cache = self.cache, key = "title:{id}", unless = ret.is_empty())]
    pub async fn title(&mut self, id: u64) -> String {
        id.to_string()
    }

    #[invalidates(cache = self.cache, keys = ["post:{post.id}"], condition = !ret.draft && post.id > 0)]
    pub async fn save(&self, post: &Post) -> Result<Post, String> {
        Ok(post.clone())
    }

    #[invalidates(cache = self.cache, keys = ["name:{name}"], condition = notify)]
    pub async fn rename(&self, name: String, notify: bool) {
        drop(name);
    }
}

#[async_trait]
pub trait Posts: Send + Sync {
    async fn get(&self, id: u64) -> Result<Post, String>;
}

#[async_trait]
impl Posts for Repo {
    #[cached(cache = self.cache, key = "dyn:{id}", condition = id > 1, unless = |p: &Post| p.draft)]
    async fn get(&self, id: u64) -> Result<Post, String> {
        Ok(Post { id, draft: true })
    }
}

fn main() {}
