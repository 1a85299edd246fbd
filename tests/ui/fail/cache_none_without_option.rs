use cache_runtime::cached;

#[cached(key = "post:{id}", cache_none = "10s")]
async fn get(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
