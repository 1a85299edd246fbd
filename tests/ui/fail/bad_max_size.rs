use cache_runtime::cached;

#[cached(key = "post:{id}", max_size = "lots")]
async fn get(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
