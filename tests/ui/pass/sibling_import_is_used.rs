//! An attribute used only after another one on the same function (its
//! arguments are applied by the first) still counts as a use of its import.
#![deny(warnings)]
use cache_runtime::{Cache, cache_put, invalidates};

pub struct Repo {
    cache: Cache,
}

impl Repo {
    #[cache_put(cache = self.cache, key = "post:{id}")]
    #[invalidates(cache = self.cache, tags = ["posts"])]
    pub async fn save(&self, id: u64) -> Result<u64, String> {
        Ok(id)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let repo = Repo { cache: Cache::in_memory() };
    assert_eq!(rt.block_on(repo.save(3)), Ok(3));
    assert_eq!(rt.block_on(repo.cache.get::<u64>("post:3")), Some(3));
}
