use cache_runtime::cached;

#[cached(key = "post:{id}", tll = 60)]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
