//! `with_cache_status` and `refreshing` wrap any call: a `&self` method, a
//! native trait impl, an `#[async_trait]` impl behind `dyn`, and the futures
//! stay `Send` (an axum handler can use them).
use async_trait::async_trait;
use cache_runtime::{Cache, CacheStatus, cached, refreshing, with_cache_status};

pub struct Repo {
    cache: Cache,
}

impl Repo {
    #[cached(cache = self.cache, key = "post:{id}")]
    pub async fn get(&self, id: u64) -> Result<String, String> {
        Ok(format!("post {id}"))
    }
}

pub trait Native {
    fn title(&self, id: u64) -> impl std::future::Future<Output = Option<String>> + Send;
}

impl Native for Repo {
    #[cached(cache = self.cache, key = "title:{id}")]
    async fn title(&self, id: u64) -> Option<String> {
        Some(format!("title {id}"))
    }
}

#[async_trait]
pub trait Dynamic: Send + Sync {
    async fn name(&self, id: u32) -> Result<String, String>;
}

#[async_trait]
impl Dynamic for Repo {
    #[cached(cache = self.cache, key = "name:{id}")]
    async fn name(&self, id: u32) -> Result<String, String> {
        Ok(format!("name {id}"))
    }
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

async fn handler(repo: &Repo, users: &dyn Dynamic) -> (&'static str, bool) {
    let (post, status) = assert_send(with_cache_status(repo.get(1))).await;
    let _: Result<String, String> = post;
    let (_, title) = assert_send(with_cache_status(refreshing(repo.title(1)))).await;
    let (_, name) = with_cache_status(users.name(1)).await;
    let header = status.map_or("bypass", CacheStatus::as_str);
    (header, title == Some(CacheStatus::Refresh) && name.is_some())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let repo = Repo { cache: Cache::in_memory() };
    let users = Repo { cache: Cache::in_memory() };
    assert_eq!(rt.block_on(handler(&repo, &users)), ("miss", true));
    assert_eq!(rt.block_on(handler(&repo, &users)).0, "hit");
}
