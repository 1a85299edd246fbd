use cache_runtime::cache_put;

#[cache_put(key = "post:{id}")]
async fn save(id: u64) {
    let _ = id;
}

fn main() {}
