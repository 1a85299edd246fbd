use cache_runtime::cached;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Post {
    id: u64,
}

#[cached(key = "post:{id}", unless = |post: &Post| post.id)]
async fn get(id: u64) -> Option<Post> {
    Some(Post { id })
}

#[cached(key = "n:{id}", unless = ret + 1)]
async fn number(id: u64) -> u64 {
    id
}

fn main() {}
