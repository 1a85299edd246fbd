use cache_runtime::cached;

pub struct Connection;

#[cached(key = "conn:{id}")]
async fn get(id: u64) -> Result<Connection, String> {
    let _ = id;
    Ok(Connection)
}

fn main() {}
