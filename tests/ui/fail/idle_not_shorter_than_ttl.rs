use cache_runtime::{cache_put, cached};

#[cached(key = "session:{id}", ttl = "10m", idle = "10m")]
async fn session(id: u64) -> String {
    format!("session {id}")
}

#[cache_put(key = "session:{id}", ttl = 60, idle = "2m")]
async fn save(id: u64) -> String {
    format!("session {id}")
}

fn main() {}
