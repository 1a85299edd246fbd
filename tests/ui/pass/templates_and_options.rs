//! Placeholder forms and every option.
use cache_runtime::{cache_put, Cache, cached, invalidates};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct Post {
    pub id: u64,
    pub author_id: u64,
    pub slug: String,
}

pub struct Repo {
    cache: Cache,
    tenant: u32,
}

impl Repo {
    // The design card's `<id>` form, fields of arguments, fields of self.
    #[cached(cache = self.cache, key = "t:{self.tenant}:post:<post.id>", ttl = 300, jitter = 0.2, name = "posts.by_post")]
    pub async fn angle_and_fields(&self, post: &Post) -> Option<Post> {
        Some(post.clone())
    }

    #[cached(cache = self.cache, key = "slug:{slug}", ttl = "1h30m", cache_none = "10s", tags = ["posts", "slug:{slug}", "author:{ret.author_id}"])]
    pub async fn by_slug(&self, slug: &str) -> Result<Option<Post>, String> {
        let _ = slug;
        Ok(None)
    }

    #[cached(cache = self.cache, key = "literal-braces:{{{id}}}", ttl = "forever")]
    pub async fn forever(&self, id: u64) -> u64 {
        id
    }

    fn cache(&self) -> &Cache {
        &self.cache
    }

    // The cache from a method returning a reference.
    #[cached(cache = self.cache(), key = "via-method:{id}")]
    pub async fn via_method(&self, id: u64) -> u64 {
        id
    }

    // Every read-side strategy, spelled as the attribute reference shows.
    #[cached(cache = self.cache, key = "feed:{id}", ttl = "1m", stale = "5m", version = "feed:{id}", depends_on = ["author:{ret.author_id}", "user:{id}"], lock = "distributed", lock_wait = "2s", max_size = "64KiB")]
    pub async fn feed(&self, id: u64) -> Result<Post, String> {
        Ok(Post { id, author_id: 1, slug: "a".into() })
    }

    #[cached(cache = self.cache, key = "hot:{id}", ttl = 30, early = 1.5, single_flight = true, lock = "local")]
    pub async fn hot(&self, id: u64) -> u64 {
        id
    }

    #[invalidates(cache = self.cache, keys = ["post:{ret.id}", "slug:{ret.slug}"], tags = ["author:{author_id}"], patterns = ["posts:page:*", "search:{term}:*"], publish = "post:created")]
    pub async fn create(&self, author_id: u64, term: &str) -> Result<Post, String> {
        let _ = term;
        Ok(Post { id: 1, author_id, slug: "a".into() })
    }

    #[cache_put(cache = self.cache, key = "post:{ret.id}", ttl = "5m", jitter = 0.0, tags = ["author:{author_id}"], depends_on = ["author:{author_id}"])]
    pub async fn save(&self, author_id: u64) -> Result<Post, String> {
        Ok(Post { id: 2, author_id, slug: "b".into() })
    }

    #[invalidates(cache = self.cache, publish = "cache:flushed")]
    pub async fn returns_nothing(&self) {}
}

fn main() {}
