use cache_runtime::cache_put;

#[cache_put(ttl = 60)]
async fn save(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
