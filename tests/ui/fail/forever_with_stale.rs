use cache_runtime::cached;

#[cached(key = "post:{id}", ttl = "forever", stale = "1m")]
async fn get(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
