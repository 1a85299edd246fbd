use cache_runtime::cached;

#[cached(key = "post:{id}", lock = "distributed", single_flight = false)]
async fn get(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
