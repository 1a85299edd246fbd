use cache_runtime::cached;

#[cached(key = "post:{id}", early = 0.0)]
async fn get(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
