use cache_runtime::{cached, invalidates};

#[cached(key = "post:{id}")]
#[invalidates(keys = ["feed"])]
async fn read_and_write(id: u64) -> String {
    format!("post {id}")
}

#[invalidates(keys = ["feed"])]
#[cached(key = "post:{id}")]
async fn write_and_read(id: u64) -> String {
    format!("post {id}")
}

fn main() {}
