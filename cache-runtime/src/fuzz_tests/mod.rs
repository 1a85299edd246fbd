//! Property tests ("fuzzing" with proptest) of everything that reads bytes
//! another process wrote: arbitrary bytes, and valid inputs that were
//! flipped, truncated, extended or given fields of the wrong type.
//!
//! Every property asserts that nothing panics, and that the result is
//! either a rejection (an error, `None`: a miss, a message ignored) or a
//! value consistent with the input, worked out independently.
//!
//! | what is parsed | where it is tested |
//! |---|---|
//! | stored entries (`entry::decode`) and the read path on top of them | `entries` |
//! | invalidation events (`ns:*` pub/sub JSON) | `events` |
//! | coherence messages (`ns#inv`), and the tier applying them | `coherence` |
//! | Lua script, pipeline and stream replies | `replies` |
//! | hostile values in keys and patterns, glob matching | `keys` |
//! | the subscriber's routing of raw messages (`ns#landed`, `ns#inv`, `ns:*`) | `subscriber::tests` |
//! | write-behind stream records | `write_behind::tests` |
//!
//! The case counts keep the whole set to a few seconds in a debug build;
//! `PROPTEST_CASES` does not change them (each property sets its own).

use proptest::collection::vec;
use proptest::prelude::*;

/// `cases` cases, and no regression files written into the source tree (a
/// failure prints its minimal input).
pub(crate) fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Characters that mean something to a key, a glob, JSON or a terminal.
const HOSTILE: &[char] = &[
    '*', '?', '[', ']', '^', '-', '\\', '\n', '\r', '\t', ':', '#', '%', '{', '}', ' ', '\0', '"',
    '\'', '/', '\u{7f}', '\u{85}', '\u{2028}', '\u{feff}', 'é', '😀',
];

/// A short string, mostly of characters that mean something somewhere.
pub(crate) fn short_hostile() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        3 => proptest::sample::select(HOSTILE),
        2 => proptest::char::range('a', 'c'),
        1 => any::<char>(),
    ];
    vec(c, 0..16).prop_map(|cs| cs.into_iter().collect())
}

/// A string as a hostile caller or a foreign service could send it:
/// hostile characters, any characters, or one repeated 10,000 times.
pub(crate) fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        32 => short_hostile(),
        16 => vec(any::<char>(), 0..12).prop_map(|cs| cs.into_iter().collect()),
        1 => (proptest::sample::select(HOSTILE), 9_990usize..10_010)
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// One change to a byte string.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    /// XOR the byte at (position modulo length) with a non-zero mask.
    Flip(usize, u8),
    /// Set it to a byte that means something (quote, brace, `0xFF`, ...).
    Set(usize, u8),
    /// Keep only the first (n modulo length + 1) bytes.
    Truncate(usize),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Insert bytes at a position.
    Insert(usize, Vec<u8>),
    /// Remove up to n bytes from a position.
    Remove(usize, usize),
}

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    let special = proptest::sample::select(vec![
        0x00, 0x01, 0x7F, 0x80, 0xC3, 0xCA, 0xED, 0xFF, b'"', b'\\', b'{', b'}', b'[', b']', b',',
        b':', b'0', b'9', b'-', b'e', b'n',
    ]);
    let insert = prop_oneof![
        vec(any::<u8>(), 1..8),
        Just(b"\xff\xfe".to_vec()),
        Just(b"\xed\xa0\x80".to_vec()),
        Just(b"\\ud800".to_vec()),
        Just(b"null".to_vec()),
        Just(b"1e999".to_vec()),
        Just(b"18446744073709551616".to_vec()),
        Just(b"[[[[[[[[".to_vec()),
    ];
    prop_oneof![
        3 => (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        2 => (any::<usize>(), special).prop_map(|(at, b)| Mutation::Set(at, b)),
        2 => any::<usize>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..16).prop_map(Mutation::Extend),
        2 => (any::<usize>(), insert).prop_map(|(at, b)| Mutation::Insert(at, b)),
        1 => (any::<usize>(), 1usize..8).prop_map(|(at, n)| Mutation::Remove(at, n)),
    ]
}

pub(crate) fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip(at, mask) if len > 0 => bytes[at % len] ^= mask,
            Mutation::Set(at, b) if len > 0 => bytes[at % len] = *b,
            Mutation::Truncate(n) if len > 0 => bytes.truncate(n % len),
            Mutation::Extend(more) => bytes.extend_from_slice(more),
            Mutation::Insert(at, more) => {
                let at = at % (len + 1);
                bytes.splice(at..at, more.iter().copied());
            }
            Mutation::Remove(at, n) if len > 0 => {
                let at = at % len;
                bytes.drain(at..(at + n).min(len));
            }
            _ => {}
        }
    }
    bytes
}

/// Any JSON value, a few levels deep.
pub(crate) fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter_map("finite", serde_json::Number::from_f64)
            .prop_map(Value::Number),
        short_hostile().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((short_hostile(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// What a pub/sub message may carry: arbitrary bytes, or any JSON.
pub(crate) fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
}

/// Any Redis reply (RESP2 and RESP3 types), a few levels deep.
#[cfg(feature = "redis")]
pub(crate) fn redis_value() -> impl Strategy<Value = redis::Value> {
    use redis::Value;
    let bulk = prop_oneof![
        vec(any::<u8>(), 0..12),
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        short_hostile().prop_map(String::into_bytes),
        Just(b"message".to_vec()),
        Just(b"pmessage".to_vec()),
    ];
    let leaf = prop_oneof![
        Just(Value::Nil),
        Just(Value::Okay),
        any::<i64>().prop_map(Value::Int),
        prop_oneof![
            Just(-1i64),
            Just(0),
            Just(1),
            Just(255),
            Just(256),
            Just(i64::MIN)
        ]
        .prop_map(Value::Int),
        bulk.prop_map(Value::BulkString),
        short_hostile().prop_map(Value::SimpleString),
        any::<f64>().prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        short_hostile().prop_map(|text| Value::VerbatimString {
            format: redis::VerbatimFormat::Text,
            text,
        }),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            4 => vec(inner.clone(), 0..6).prop_map(Value::Array),
            1 => vec(inner.clone(), 0..4).prop_map(Value::Set),
            2 => vec((inner.clone(), inner.clone()), 0..4).prop_map(Value::Map),
            1 => vec(inner.clone(), 0..4).prop_map(|data| Value::Push {
                kind: redis::PushKind::Message,
                data,
            }),
            1 => (inner.clone(), vec((inner.clone(), inner), 0..2)).prop_map(|(data, attributes)| {
                Value::Attribute {
                    data: Box::new(data),
                    attributes,
                }
            }),
        ]
    })
}

#[cfg(feature = "redis")]
mod coherence;
mod entries;
mod events;
mod keys;
