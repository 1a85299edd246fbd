use cache_runtime::invalidates;

#[invalidates(keys = ["post:{ret.id}"])]
async fn save(id: u64) {
    let _ = id;
}

fn main() {}
