use cache_runtime::cached;

#[cached(key = "post:{id}", depends_on = ["author:{author_id}"])]
async fn get(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
