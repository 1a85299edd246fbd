use cache_runtime::cached;

#[cached(key = "post:{nope}", ttl = "soon", tags = "x", colour = "red")]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
