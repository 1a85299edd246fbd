use cache_runtime::cached;

pub struct Repo {
    pool: u32,
}

impl Repo {
    #[cached(cache = self.pool, key = "post:{id}")]
    async fn get(&self, id: u64) -> u64 {
        id + u64::from(self.pool)
    }
}

fn main() {}
