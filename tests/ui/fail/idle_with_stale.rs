use cache_runtime::cached;

#[cached(key = "session:{id}", ttl = "10m", idle = "1m", stale = "30s")]
async fn session(id: u64) -> String {
    format!("session {id}")
}

#[cached(key = "other:{id}", idle = "forever")]
async fn other(id: u64) -> String {
    format!("other {id}")
}

fn main() {}
