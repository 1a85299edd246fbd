use cache_runtime::cached;

pub struct Filter {
    pub author: u64,
}

#[cached(ttl = 60)]
async fn search(filter: Filter) -> Vec<u64> {
    vec![filter.author]
}

fn main() {}
