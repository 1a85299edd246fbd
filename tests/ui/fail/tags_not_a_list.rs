use cache_runtime::cached;

#[cached(key = "post:{id}", tags = "author:{id}")]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
