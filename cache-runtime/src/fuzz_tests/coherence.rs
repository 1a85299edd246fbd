//! Coherence messages heard on `ns#inv`, and the tier applying them.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::key::glob_match;
use crate::subscriber::Coherence;
use crate::tier::LocalTier;

/// A message as the invalidation script writes it with Lua's `cjson`:
/// an empty list is written `{}`, `/` may be escaped.
fn message() -> impl Strategy<Value = (Value, Vec<u8>)> {
    let names = || vec(short_hostile().prop_map(|s| format!("ns:{s}")), 0..5);
    (
        short_hostile(),
        short_hostile(),
        names(),
        vec((short_hostile(), any::<u64>()), 0..3),
        vec(short_hostile(), 0..3),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(instance, nonce, entries, versions, patterns, slashes, seq)| {
            let list = |items: Vec<Value>| {
                if items.is_empty() {
                    json!({})
                } else {
                    Value::Array(items)
                }
            };
            let (vn, vv): (Vec<_>, Vec<_>) = versions
                .into_iter()
                .map(|(n, v)| (json!(format!("ns#ver:{n}")), json!(v)))
                .unzip();
            let doc = json!({
                "i": instance,
                "n": nonce,
                "k": list(entries.into_iter().map(Value::from).collect()),
                "vn": list(vn),
                "vv": list(vv),
                "p": list(patterns.into_iter().map(|p| Value::from(format!("ns:{p}"))).collect()),
                "s": seq.to_string(),
            });
            let mut text = serde_json::to_string(&doc).unwrap();
            if slashes {
                text = text.replace('/', "\\/");
            }
            (doc, text.into_bytes())
        })
}

/// Parses `bytes` as the subscriber does and checks the fields against
/// a plain JSON parse.
fn check(bytes: &[u8]) -> Option<Coherence> {
    let parsed = serde_json::from_slice::<Coherence>(bytes).ok()?;
    let Ok(generic) = serde_json::from_slice::<Value>(bytes)
        .or_else(|_| serde_json::from_str(&String::from_utf8_lossy(bytes)))
    else {
        // An unknown field serde_json skipped without checking all of it.
        return Some(parsed);
    };
    let map = match generic {
        Value::Object(map) => map,
        // serde also reads a struct from an array, field by field.
        Value::Array(items) => ["i", "k", "vn", "vv", "p", "n", "s"]
            .iter()
            .map(|f| f.to_string())
            .zip(items)
            .collect(),
        other => panic!("a message from JSON that is neither an object nor an array: {other}"),
    };
    let map = &map;
    assert_eq!(map["i"].as_str(), Some(parsed.instance.as_str()));
    assert_eq!(
        map.get("n").map_or(Some(""), Value::as_str),
        Some(parsed.nonce.as_str())
    );
    // The sequence number: a string of digits, or a number.
    let seq = match map.get("s") {
        None => Some(0),
        Some(Value::String(text)) => text.parse().ok(),
        Some(other) => other.as_u64(),
    };
    assert_eq!(seq, Some(parsed.seq));
    fn list<T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        map: &serde_json::Map<String, Value>,
        name: &str,
        got: &[T],
    ) {
        match map.get(name) {
            None | Some(Value::Object(_)) => assert!(got.is_empty(), "{name}: {got:?}"),
            Some(v) => assert_eq!(
                serde_json::from_value::<Vec<T>>(v.clone()).unwrap(),
                got,
                "{name}"
            ),
        }
    }
    list(map, "k", &parsed.entries);
    list(map, "vn", &parsed.version_names);
    list(map, "vv", &parsed.version_values);
    list(map, "p", &parsed.patterns);
    Some(parsed)
}

/// Applies `message` to a tier holding `held` as the cache's hook does,
/// and checks that exactly the named and matching entries are gone.
fn apply(held: &[String], message: Coherence) {
    let tier = LocalTier::new(
        1000,
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    tier.connected();
    for name in held {
        tier.fill(name, b"x", None, None, tier.token());
    }
    // As `CacheHooks::coherence` does.
    for pattern in &message.patterns {
        tier.apply_pattern(pattern);
    }
    let versions: Vec<(String, u64)> = message
        .version_names
        .iter()
        .cloned()
        .zip(message.version_values.iter().copied())
        .collect();
    tier.apply(&message.entries, &versions);
    for name in held {
        let removed =
            message.entries.contains(name) || message.patterns.iter().any(|p| glob_match(p, name));
        assert_eq!(tier.get(name).is_none(), removed, "{name}");
    }
    for (name, _) in &versions {
        let top = versions
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .max();
        assert_eq!(tier.version(name), top);
    }
}

fn held() -> impl Strategy<Value = Vec<String>> {
    vec(short_hostile().prop_map(|s| format!("ns:{s}")), 0..6)
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn a_message_round_trips((doc, bytes) in message()) {
        let parsed = check(&bytes);
        prop_assert!(parsed.is_some(), "{}", doc);
    }

    #[test]
    fn arbitrary_bytes_are_rejected_or_read_consistently(
        bytes in message_bytes()
    ) {
        check(&bytes);
    }

    #[test]
    fn a_field_of_the_wrong_type_is_rejected_or_read_consistently(
        (doc, _) in message(),
        field in proptest::sample::select(&["i", "n", "k", "vn", "vv", "p", "s"][..]),
        value in json_value(),
    ) {
        let mut doc = doc;
        doc[field] = value;
        check(&serde_json::to_vec(&doc).unwrap());
    }
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn a_damaged_message_applied_to_a_tier_drops_only_what_it_names(
        (_, bytes) in message(),
        mutations in vec(mutation(), 0..4),
        mut held in held(),
    ) {
        let bytes = mutate(bytes, &mutations);
        if let Some(message) = check(&bytes) {
            // Some of the entries it names are held.
            held.extend(message.entries.iter().take(2).cloned());
            apply(&held, message);
        }
    }
}
