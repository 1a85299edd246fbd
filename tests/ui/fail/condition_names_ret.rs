use cache_runtime::cached;

#[cached(key = "post:{id}", condition = ret > 0)]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
