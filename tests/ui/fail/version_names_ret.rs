use cache_runtime::cached;

#[cached(key = "post:{id}", version = "post:{ret}")]
async fn get(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
