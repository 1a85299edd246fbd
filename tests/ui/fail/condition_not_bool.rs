use cache_runtime::cached;

#[cached(key = "post:{id}", condition = id)]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
