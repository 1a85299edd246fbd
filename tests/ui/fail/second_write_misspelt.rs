use cache_runtime::{cache_put, invalidates};

// The second and third attributes are checked like the first: each error
// points into its own attribute.
#[cache_put(key = "post:{ret}")]
#[invalidates(keys = ["post:{idd}"])]
#[invalidates]
async fn save(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
