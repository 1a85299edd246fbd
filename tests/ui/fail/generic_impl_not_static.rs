// A method of a generic impl that returns the impl's parameter: the
// attribute cannot see the impl's bounds, and a cached value is shared
// between tasks, so the parameter must be `'static`; the compiler says so at
// the return type.
use cache_runtime::{Cache, cached};
use serde::{Serialize, de::DeserializeOwned};

struct Table<T> {
    cache: Cache,
    rows: Vec<T>,
}

impl<T: Clone + Serialize + DeserializeOwned + Send + Sync> Table<T> {
    #[cached(cache = self.cache, key = "row:{index}")]
    async fn row(&self, index: usize) -> Option<T> {
        self.rows.get(index).cloned()
    }
}

fn main() {}
