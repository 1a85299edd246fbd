use cache_runtime::invalidates;

#[invalidates(keys = ["post:{id}"], publish = post_updated)]
async fn save(id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

fn main() {}
