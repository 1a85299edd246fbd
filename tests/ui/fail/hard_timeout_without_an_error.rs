use cache_runtime::cached;

// Nothing to return when the loader is abandoned: not a `Result`.
#[cached(key = "count:{id}", hard_timeout = "2s")]
async fn count(id: u64) -> u64 {
    id
}

#[derive(Debug)]
struct DbError;

// A `Result` whose error cannot be built from a timeout.
#[cached(key = "user:{id}", hard_timeout = "2s")]
async fn user(id: u64) -> Result<String, DbError> {
    Ok(format!("user {id}"))
}

fn main() {}
