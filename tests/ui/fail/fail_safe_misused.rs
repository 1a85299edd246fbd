use cache_runtime::cached;

// A throttle with nothing to throttle.
#[cached(key = "user:{id}", ttl = "5m", fail_safe_throttle = "30s")]
async fn user(id: u64) -> Result<String, String> {
    Ok(format!("user {id}"))
}

// `idle` drops an unread entry; fail-safe keeps it past its TTL.
#[cached(key = "session:{id}", ttl = "10m", idle = "1m", fail_safe = "1h")]
async fn session(id: u64) -> Result<String, String> {
    Ok(format!("session {id}"))
}

// An entry that never expires never needs a fail-safe copy.
#[cached(key = "config:{id}", ttl = "forever", fail_safe = "1h")]
async fn config(id: u64) -> Result<String, String> {
    Ok(format!("config {id}"))
}

fn main() {}
