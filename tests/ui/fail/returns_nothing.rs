use cache_runtime::cached;

#[cached(key = "post:{id}")]
async fn warm(id: u64) {
    let _ = id;
}

fn main() {}
