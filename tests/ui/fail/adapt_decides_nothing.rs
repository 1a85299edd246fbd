use cache_runtime::{adapt, cached};

// The decisions are made on the `Adapt` and returned; a closure that
// returns nothing decides nothing.
#[cached(key = "post:{id}")]
async fn post(id: u64, draft: bool) -> String {
    adapt(|a| {
        if draft {
            let _ = a.skip();
        }
    });
    format!("post {id}")
}

fn main() {}
