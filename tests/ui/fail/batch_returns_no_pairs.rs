use cache_runtime::cached;

// Values without their ids: which id is which?
#[cached(batch, key = "user:{id}")]
async fn users(ids: &[u64]) -> Result<Vec<String>, String> {
    Ok(ids.iter().map(|id| id.to_string()).collect())
}

fn main() {}
