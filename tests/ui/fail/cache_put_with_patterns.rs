use cache_runtime::cache_put;

#[cache_put(key = "post:{ret}", patterns = ["posts:*"])]
async fn save(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
