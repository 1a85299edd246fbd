use cache_runtime::cached;

#[cached(key = "post:{post_id}")]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
