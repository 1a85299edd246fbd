//! Every function shape #[cached] and #[invalidates] go on.
use cache_runtime::{Cache, cached, invalidates};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Clone, Serialize, Deserialize)]
pub struct Post {
    pub id: u64,
    pub author_id: u64,
}

#[cached(key = "free:{id}")]
pub async fn free_function(id: u64) -> Result<Post, String> {
    Ok(Post { id, author_id: 1 })
}

#[cached(cache = cache)]
pub async fn default_key(cache: &Cache, a: u32, b: &str) -> String {
    format!("{a}{b}")
}

#[cached(key = "generic:{id}")]
pub async fn generic<T: Serialize + DeserializeOwned + Default>(id: u64) -> Option<T> {
    let _ = id;
    Some(T::default())
}

pub struct Repo {
    cache: Cache,
}

impl Repo {
    #[cached(cache = self.cache, key = "post:{id}", tags = ["author:{ret.author_id}"])]
    pub async fn by_ref(&self, id: u64) -> Result<Post, std::io::Error> {
        Ok(Post { id, author_id: 1 })
    }

    #[cached(cache = self.cache, key = "mut:{id}")]
    pub async fn by_mut(&mut self, id: u64) -> u64 {
        id
    }

    #[invalidates(cache = self.cache, keys = ["post:{post.id}"])]
    pub async fn save(&self, post: &Post) -> Result<(), std::io::Error> {
        let _ = post;
        Ok(())
    }
}

trait Posts {
    async fn get(&self, id: u64) -> Result<Post, String>;
}

/// A trait whose futures must be `Send` (as axum handlers need): the
/// generated future is `Send` when the body's is.
pub trait SendPosts {
    fn get_send(&self, id: u64) -> impl std::future::Future<Output = Result<Post, String>> + Send;
}

impl SendPosts for Repo {
    #[cached(cache = self.cache, key = "send:{id}")]
    async fn get_send(&self, id: u64) -> Result<Post, String> {
        Ok(Post { id, author_id: 3 })
    }
}

impl Posts for Repo {
    #[cached(cache = self.cache, key = "trait:{id}")]
    async fn get(&self, id: u64) -> Result<Post, String> {
        Ok(Post { id, author_id: 2 })
    }
}

pub struct Generic<T> {
    cache: Cache,
    value: T,
}

impl<T: Clone + Serialize + DeserializeOwned> Generic<T> {
    #[cached(cache = self.cache, key = "value")]
    pub async fn value(&self) -> T {
        self.value.clone()
    }
}

fn main() {}
