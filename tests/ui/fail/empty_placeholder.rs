use cache_runtime::invalidates;

#[invalidates(keys = ["post:{}"])]
async fn save(id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

fn main() {}
