//! Several write attributes on one function: `#[invalidates]` more than
//! once and with `#[cache_put]`, on two caches, in an `#[async_trait]` impl,
//! with a `&mut self` receiver and a path-qualified attribute; the futures
//! stay `Send`.
use async_trait::async_trait;
use cache_runtime::{Cache, CacheOptions, Links, cache_put, invalidates};

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Post {
    id: u64,
    author: u64,
}

pub struct Repo {
    posts: Cache,
    lists: Cache,
}

impl Repo {
    /// The put on one cache, the invalidations on another.
    #[cache_put(cache = self.posts, key = "post:{ret.id}")]
    #[invalidates(cache = self.lists, tags = ["author:{ret.author}"], publish = "post:saved")]
    #[cache_runtime::invalidates(cache = self.lists, keys = ["feed"], condition = ret.id > 0)]
    pub async fn save(&self, post: Post) -> Result<Post, String> {
        Ok(post)
    }

    #[invalidates(cache = self.lists, keys = ["feed"])]
    #[invalidates(cache = self.posts, keys = ["post:{id}"])]
    pub async fn remove(&mut self, id: u64) {
        let _ = id;
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    async fn store(&self, post: Post) -> Result<Post, String>;
}

#[async_trait]
impl Store for Repo {
    #[invalidates(cache = self.lists, keys = ["feed"])]
    #[cache_put(cache = self.posts, key = "post:{post.id}", ttl = "1m")]
    async fn store(&self, post: Post) -> Result<Post, String> {
        Ok(post)
    }
}

fn assert_send<F: std::future::Future + Send>(f: F) -> F {
    f
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut repo = Repo {
            posts: Cache::in_memory(),
            lists: Cache::in_memory(),
        };
        let options = CacheOptions::new("feed");
        repo.lists.put("feed", &vec![1], &options, Links::new()).await.unwrap();
        let saved = assert_send(repo.save(Post { id: 1, author: 7 })).await.unwrap();
        assert_eq!(saved.id, 1);
        assert!(repo.posts.get::<Post>("post:1").await.is_some(), "put on `posts`");
        assert!(repo.lists.get::<Vec<u64>>("feed").await.is_none(), "invalidated on `lists`");

        repo.remove(1).await;
        assert!(repo.posts.get::<Post>("post:1").await.is_none());

        let dynamic: &dyn Store = &repo;
        dynamic.store(Post { id: 2, author: 7 }).await.unwrap();
        assert!(repo.posts.get::<Post>("post:2").await.is_some());
    });
}
