use cache_runtime::cached;

#[cached(key = "post:{id}", ttl = 60, stale = "30s", early = 1.0)]
async fn get(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
