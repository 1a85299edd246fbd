use cache_runtime::{cached, invalidates};

#[cached(key = "post:{id}", condition = "id > 0")]
async fn get(id: u64) -> u64 {
    id
}

#[invalidates(keys = ["post:{id}"], unless = ret)]
async fn save(id: u64) -> bool {
    id > 0
}

fn main() {}
