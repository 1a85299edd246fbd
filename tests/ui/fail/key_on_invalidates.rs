use cache_runtime::invalidates;

#[invalidates(key = "post:{id}")]
async fn save(id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

fn main() {}
