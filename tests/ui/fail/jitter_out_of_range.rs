use cache_runtime::cached;

#[cached(key = "post:{id}", jitter = 1.5)]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
