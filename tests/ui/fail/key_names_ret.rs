use cache_runtime::cached;

#[cached(key = "post:{ret.id}")]
async fn get(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
