use std::collections::HashMap;

use cache_runtime::cached;

// No argument holds the ids.
#[cached(batch, key = "user:{id}")]
async fn one(id: u64) -> HashMap<u64, String> {
    HashMap::from([(id, String::new())])
}

// The key does not name one id.
#[cached(batch, key = "users")]
async fn unnamed(ids: &[u64]) -> HashMap<u64, String> {
    ids.iter().map(|id| (*id, String::new())).collect()
}

// A refresh policy a batch read does not have.
#[cached(batch, key = "user:{id}", stale = "1m")]
async fn stale(ids: &[u64]) -> HashMap<u64, String> {
    ids.iter().map(|id| (*id, String::new())).collect()
}

// `batch = ...` names an argument that is not a list.
#[cached(batch = team, key = "user:{id}")]
async fn named(team: u64, ids: &[u64]) -> HashMap<u64, String> {
    ids.iter().map(|id| (*id + team, String::new())).collect()
}

fn main() {}
