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
//! | stored entries (`entry::decode`) and the read path on top of them | `entries` below |
//! | invalidation events (`ns:*` pub/sub JSON) | `events` below |
//! | coherence messages (`ns#inv`), and the tier applying them | `coherence` below |
//! | Lua script, pipeline and stream replies | `replies` below |
//! | hostile values in keys and patterns, glob matching | `keys` below |
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

/// Stored entries: the envelope decoder, and a cache read over bytes that
/// are not what the cache wrote.
mod entries {
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::time::Duration;

    use proptest::test_runner::TestRunner;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::codec::Codec;
    use crate::entry::{self, Meta};
    use crate::error::ErrorKind;
    use crate::events::now_ms;
    use crate::store::FillRequest;
    use crate::{Cache, CacheOptions};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        ids: Vec<i64>,
        flag: Option<bool>,
        extra: BTreeMap<String, u32>,
    }

    fn sample() -> impl Strategy<Value = Sample> {
        (
            hostile_string(),
            vec(any::<i64>(), 0..4),
            any::<Option<bool>>(),
            vec((short_hostile(), any::<u32>()), 0..3),
        )
            .prop_map(|(name, ids, flag, extra)| Sample {
                name,
                ids,
                flag,
                extra: extra.into_iter().collect(),
            })
    }

    /// Header values, including the extremes a corrupt header may hold.
    fn stamp() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0),
            Just(1),
            Just(u64::MAX),
            Just(u64::MAX / 2),
            Just(i64::MAX as u64 + 1),
            any::<u64>(),
        ]
    }

    fn meta() -> impl Strategy<Value = Meta> {
        (
            any::<bool>(),
            stamp(),
            stamp(),
            prop_oneof![Just(0), Just(u32::MAX), any::<u32>()],
            prop_oneof![Just(0), Just(u32::MAX), any::<u32>()],
        )
            .prop_map(|(absent, fresh_until_ms, version, cost_ms, epoch)| Meta {
                absent,
                fresh_until_ms,
                version,
                cost_ms,
                epoch,
            })
    }

    /// What `entry::decode` must make of `bytes`, from the documented
    /// layout (see `entry.rs`): `None` means rejected.
    fn expected(bytes: &[u8]) -> Option<Meta> {
        // Codec ids: 1 JSON; 2 postcard, with its feature.
        let codec_known = bytes
            .get(2)
            .is_some_and(|&id| id == 1 || (id == 2 && cfg!(feature = "postcard")));
        if bytes.len() < 28 || bytes[0] != 0xCA || bytes[1] != 2 || !codec_known {
            return None;
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        Some(Meta {
            absent: bytes[3] & 1 != 0,
            fresh_until_ms: u64_at(4),
            version: u64_at(12),
            cost_ms: u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]),
            epoch: u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]),
        })
    }

    /// Decodes `bytes` and checks the result against `expected`; returns
    /// the value the payload holds, if it holds one.
    fn check(bytes: &[u8]) -> Option<(Meta, Sample)> {
        let want = expected(bytes);
        match (entry::decode(bytes), want) {
            (Ok(env), Some(meta)) => {
                assert_eq!(env.meta, meta);
                assert_eq!(Some(env.codec), Codec::from_id(bytes[2]));
                assert_eq!(env.payload, &bytes[28..]);
                // Any payload: a value or an error, never a panic.
                let _ = env.codec.decode::<serde_json::Value>(env.payload);
                env.codec
                    .decode::<Sample>(env.payload)
                    .ok()
                    .map(|v| (meta, v))
            }
            (Err(e), None) => {
                assert_eq!(e.kind(), ErrorKind::Codec);
                None
            }
            (got, want) => panic!("decode gave {got:?}, the layout says {want:?}"),
        }
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn an_entry_round_trips(meta in meta(), value in sample()) {
            let bytes = entry::encode(Codec::Json, meta, &value).unwrap();
            prop_assert_eq!(check(&bytes), Some((meta, value)));
        }

        #[test]
        fn arbitrary_bytes_are_rejected_or_read_as_laid_out(
            mut bytes in vec(any::<u8>(), 0..80),
            // Past the magic byte, the version, the codec id: each check
            // is reached with short and long inputs alike.
            valid_prefix in 0..4usize,
        ) {
            let prefix = &[0xCA, 2, 1][..valid_prefix.min(bytes.len())];
            bytes[..prefix.len()].copy_from_slice(prefix);
            check(&bytes);
        }

        #[test]
        fn any_payload_behind_a_valid_header(meta in meta(), tail in vec(any::<u8>(), 0..64)) {
            let mut bytes = entry::encode(Codec::Json, meta, &()).unwrap();
            bytes.truncate(28);
            bytes.extend_from_slice(&tail);
            check(&bytes);
        }

        #[test]
        fn a_damaged_entry_is_rejected_or_read_consistently(
            meta in meta(),
            value in sample(),
            mutations in vec(mutation(), 1..5),
        ) {
            let good = entry::encode(Codec::Json, meta, &value).unwrap();
            let bad = mutate(good.clone(), &mutations);
            if let Some((_, read)) = check(&bad)
                && bad.get(28..) == good.get(28..) {
                    prop_assert_eq!(read, value, "the payload is intact");
                }
        }
    }

    /// The read path over whatever is stored: a value is served only when
    /// the bytes are an entry of this version whose payload decodes; else
    /// the loader runs, its value is returned, and (without a refresh
    /// policy) it replaces the bad bytes.
    #[test]
    fn the_read_path_serves_only_what_decodes_and_replaces_the_rest() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cache = Cache::in_memory();
        let store = cache
            .store()
            .backend()
            .as_memory()
            .expect("an in-memory cache");
        let loaded = Sample {
            name: "from the loader".into(),
            ids: vec![1],
            flag: None,
            extra: BTreeMap::new(),
        };
        let plain = CacheOptions::new("fuzz").ttl(Duration::from_secs(60));
        let stale = plain.stale(Duration::from_secs(60));
        let early = plain.early(1.0);
        let near_now = || {
            let now = now_ms();
            prop_oneof![
                Just(now - 3_600_000),
                Just(now + 3_600_000),
                Just(0u64),
                any::<u64>()
            ]
        };
        let input = (
            meta(),
            near_now(),
            prop_oneof![Just(0u64), any::<u64>()],
            sample(),
            vec(mutation(), 0..3),
            0..3usize,
        );
        let served = Cell::new(0u32);
        let case = Cell::new(0u64);
        let mut runner = TestRunner::new(config(2000));
        runner
            .run(
                &input,
                |(meta, fresh, version, value, mutations, policy)| {
                    // A key of its own per case: a refresh spawned by an earlier
                    // case cannot land on this one.
                    case.set(case.get() + 1);
                    let key = format!("k:{}", case.get());
                    let meta = Meta {
                        fresh_until_ms: fresh,
                        version,
                        ..meta
                    };
                    let bytes = mutate(
                        entry::encode(Codec::Json, meta, &value).unwrap(),
                        &mutations,
                    );
                    let (entry, marker) = cache.entry_names(&key);
                    assert!(store.fill_now(FillRequest::new(
                        entry,
                        marker,
                        bytes.clone(),
                        store.current_token().seq
                    )));
                    let options = [&plain, &stale, &early][policy];
                    let read = || {
                        let ran = Cell::new(false);
                        let (ran_ref, loaded) = (&ran, &loaded);
                        let got =
                            rt.block_on(cache.get_or_load(&key, options, move || async move {
                                ran_ref.set(true);
                                Ok::<_, ()>(loaded.clone())
                            }));
                        (got, ran.get())
                    };
                    let (got, ran) = read();
                    // Unversioned reads serve only entries stamped version 0.
                    let usable = check(&bytes).filter(|(m, _)| m.version == 0);
                    match (&usable, ran) {
                        (Some((_, stored)), false) => {
                            served.set(served.get() + 1);
                            prop_assert_eq!(got, Ok(stored.clone()));
                        }
                        (None, false) => {
                            prop_assert!(
                                false,
                                "served {got:?} from bytes that do not decode: {bytes:?}"
                            )
                        }
                        (Some((m, _)), true) => {
                            // Only a refresh policy reloads a value that decodes.
                            prop_assert!(policy != 0, "reloaded a good entry: {m:?}");
                            prop_assert_eq!(got, Ok(loaded.clone()));
                        }
                        (None, true) => {
                            prop_assert_eq!(got, Ok(loaded.clone()));
                            if policy == 0 {
                                let (again, ran) = read();
                                prop_assert!(!ran, "the loaded value replaced the bad bytes");
                                prop_assert_eq!(again, Ok(loaded.clone()));
                            }
                        }
                    }
                    if policy == 1 {
                        // Stale-while-revalidate: reloaded exactly when past its TTL.
                        let past = meta.fresh_until_ms != 0 && meta.fresh_until_ms <= now_ms();
                        if let Some((m, _)) = &usable
                            && m.fresh_until_ms == meta.fresh_until_ms
                        {
                            prop_assert_eq!(ran, past);
                        }
                    }
                    Ok(())
                },
            )
            .unwrap();
        // The property means little if no case was ever served.
        assert!(served.get() > 100, "only {} cases were hits", served.get());
    }
}

/// Invalidation events heard on `ns:*`.
mod events {
    use serde_json::{Value, json};

    use super::*;
    use crate::events::{InvalidationEvent, entity_of};

    fn event() -> impl Strategy<Value = InvalidationEvent> {
        let list = || vec(short_hostile(), 0..4);
        (
            (
                any::<u32>(),
                short_hostile(),
                short_hostile(),
                short_hostile(),
            ),
            (list(), list(), list(), list()),
            (
                any::<u64>(),
                short_hostile(),
                proptest::option::of(short_hostile()),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (v, namespace, event, entity),
                    (keys, tags, patterns, bumps),
                    (ts, instance, id, applied),
                )| InvalidationEvent {
                    v,
                    namespace,
                    event,
                    entity,
                    keys,
                    tags,
                    patterns,
                    bumps,
                    ts,
                    instance,
                    id,
                    applied,
                },
            )
    }

    /// Parses `bytes` as the subscriber does and, if that succeeds, checks
    /// every field against a plain JSON parse of the same bytes.
    fn check(bytes: &[u8]) -> Option<InvalidationEvent> {
        let parsed = serde_json::from_slice::<InvalidationEvent>(bytes).ok()?;
        let again = serde_json::to_vec(&parsed).unwrap();
        assert_eq!(
            serde_json::from_slice::<InvalidationEvent>(&again).unwrap(),
            parsed
        );
        // What the handler does with it next cannot panic either.
        assert!(parsed.channel().starts_with(&parsed.namespace));
        assert!(parsed.event.starts_with(entity_of(&parsed.event)));
        let Ok(generic) = serde_json::from_slice::<Value>(bytes)
            .or_else(|_| serde_json::from_str(&String::from_utf8_lossy(bytes)))
        else {
            // serde_json skips an unknown field without checking all of it
            // (its depth, its escapes): nothing to compare the fields with.
            return Some(parsed);
        };
        let map = match generic {
            Value::Object(map) => map,
            // serde also reads a struct from an array, field by field.
            Value::Array(items) => FIELDS.iter().map(|f| f.to_string()).zip(items).collect(),
            other => panic!("an event from JSON that is neither an object nor an array: {other}"),
        };
        let text = |name: &str| map.get(name).map_or(Some(""), Value::as_str);
        let list = |name: &str| -> Option<Vec<&str>> {
            map.get(name).map_or(Some(Vec::new()), |v| {
                v.as_array()?.iter().map(Value::as_str).collect()
            })
        };
        assert_eq!(map["v"].as_u64(), Some(u64::from(parsed.v)));
        assert_eq!(map["namespace"].as_str(), Some(parsed.namespace.as_str()));
        assert_eq!(map["event"].as_str(), Some(parsed.event.as_str()));
        assert_eq!(text("entity"), Some(parsed.entity.as_str()));
        assert_eq!(text("instance"), Some(parsed.instance.as_str()));
        assert_eq!(map.get("id").and_then(Value::as_str), parsed.id.as_deref());
        for (name, got) in [
            ("keys", &parsed.keys),
            ("tags", &parsed.tags),
            ("patterns", &parsed.patterns),
            ("bumps", &parsed.bumps),
        ] {
            let got: Vec<&str> = got.iter().map(String::as_str).collect();
            assert_eq!(list(name), Some(got), "{name}");
        }
        assert_eq!(
            map.get("ts").map_or(Some(0), Value::as_u64),
            Some(parsed.ts)
        );
        assert_eq!(
            map.get("applied").map_or(Some(false), Value::as_bool),
            Some(parsed.applied)
        );
        Some(parsed)
    }

    /// Whether `value` has the type the event's field `name` is declared
    /// with.
    fn fits(name: &str, value: &Value) -> bool {
        match name {
            "v" => value.as_u64().is_some_and(|v| v <= u64::from(u32::MAX)),
            "ts" => value.is_u64(),
            "applied" => value.is_boolean(),
            "id" => value.is_string() || value.is_null(),
            "keys" | "tags" | "patterns" | "bumps" => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
            _ => value.is_string(),
        }
    }

    const FIELDS: &[&str] = &[
        "v",
        "namespace",
        "event",
        "entity",
        "keys",
        "tags",
        "patterns",
        "bumps",
        "ts",
        "instance",
        "id",
        "applied",
    ];

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn an_event_round_trips(event in event()) {
            let bytes = serde_json::to_vec(&event).unwrap();
            prop_assert_eq!(check(&bytes), Some(event));
        }

        #[test]
        fn arbitrary_bytes_are_rejected_or_read_consistently(
            bytes in prop_oneof![
                vec(any::<u8>(), 0..64),
                json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            ]
        ) {
            check(&bytes);
        }

        #[test]
        fn a_damaged_event_is_rejected_or_read_consistently(
            event in event(),
            mutations in vec(mutation(), 1..5),
        ) {
            let bytes = mutate(serde_json::to_vec(&event).unwrap(), &mutations);
            check(&bytes);
        }

        #[test]
        fn a_field_of_the_wrong_type_is_rejected(
            event in event(),
            field in proptest::sample::select(FIELDS),
            value in json_value(),
        ) {
            let mut doc = serde_json::to_value(&event).unwrap();
            doc[field] = value.clone();
            let bytes = serde_json::to_vec(&doc).unwrap();
            let parsed = check(&bytes);
            prop_assert_eq!(parsed.is_some(), fits(field, &value), "{} = {}", field, value);
        }

        #[test]
        fn numbers_out_of_range_are_rejected(
            negative in any::<bool>(),
            digits in prop_oneof![
                "[1-9][0-9]{0,45}",
                Just("4294967295".to_owned()),
                Just("4294967296".to_owned()),
                Just("18446744073709551615".to_owned()),
                Just("18446744073709551616".to_owned()),
            ],
            fraction in prop_oneof![Just(""), Just(".0"), Just("e3"), Just("e999"), Just("E-999")],
        ) {
            let number = format!("{}{digits}{fraction}", if negative { "-" } else { "" });
            let integer = !negative && fraction.is_empty();
            let v = check(format!(r#"{{"v":{number},"namespace":"a","event":"b"}}"#).as_bytes());
            prop_assert_eq!(v.is_some(), integer && digits.parse::<u32>().is_ok(), "v = {}", number);
            let ts = check(format!(r#"{{"v":1,"namespace":"a","event":"b","ts":{number}}}"#).as_bytes());
            prop_assert_eq!(ts.map(|e| e.ts), digits.parse::<u64>().ok().filter(|_| integer), "ts = {}", number);
        }

    }

    proptest! {
        // Each case is a large document: fewer of them.
        #![proptest_config(config(500))]

        #[test]
        fn deep_nesting_is_rejected_without_overflowing_the_stack(
            depth in prop_oneof![1usize..200, 200usize..20_000],
            field in proptest::sample::select(&["keys", "ts", "unknown"][..]),
            object in any::<bool>(),
        ) {
            let (open, close) = if object { (r#"{"a":"#, "}") } else { ("[", "]") };
            let nested = format!("{}0{}", open.repeat(depth), close.repeat(depth));
            let doc = format!(r#"{{"v":1,"namespace":"a","event":"b","{field}":{nested}}}"#);
            let parsed = check(doc.as_bytes());
            if field != "unknown" {
                prop_assert!(parsed.is_none(), "nesting in {} is the wrong type", field);
            } else if depth < 100 {
                prop_assert!(parsed.is_some(), "an unknown field is ignored");
            }
        }
    }

    proptest! {
        #![proptest_config(config(32))]

        #[test]
        fn very_long_strings_round_trip(
            c in proptest::sample::select(HOSTILE),
            n in 10_000usize..20_000,
            keys in vec(hostile_string(), 0..3),
        ) {
            let long: String = std::iter::repeat_n(c, n).collect();
            let event = InvalidationEvent {
                v: 1,
                namespace: long.clone(),
                event: long.clone(),
                entity: long.clone(),
                keys,
                tags: vec![long.clone()],
                patterns: vec![long],
                bumps: Vec::new(),
                ts: 0,
                instance: String::new(),
                id: None,
                applied: false,
            };
            prop_assert_eq!(check(&serde_json::to_vec(&event).unwrap()), Some(event));
        }

    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn invalid_utf8_in_a_string_is_rejected(
            event in event(),
            field in proptest::sample::select(&["namespace", "event", "entity", "instance", "keys"][..]),
            bad in proptest::sample::select(vec![
                b"\xff".to_vec(),
                b"\xc3".to_vec(),
                b"\xed\xa0\x80".to_vec(),
                b"\xf4\x90\x80\x80".to_vec(),
                b"\xc0\xaf".to_vec(),
                b"\\ud800".to_vec(),
                b"\\udc00x".to_vec(),
            ]),
        ) {
            let mut doc = serde_json::to_value(&event).unwrap();
            doc[field] = if field == "keys" { json!(["\u{1}MARK\u{1}"]) } else { json!("\u{1}MARK\u{1}") };
            let text = serde_json::to_vec(&doc).unwrap();
            let mark = b"\\u0001MARK\\u0001";
            let at = text.windows(mark.len()).position(|w| w == mark).unwrap();
            let mut bytes = text[..at].to_vec();
            bytes.extend_from_slice(&bad);
            bytes.extend_from_slice(&text[at + mark.len()..]);
            prop_assert!(check(&bytes).is_none(), "{}", String::from_utf8_lossy(&bytes));
        }
    }
}

/// Coherence messages heard on `ns#inv`, and the tier applying them.
#[cfg(feature = "redis")]
mod coherence {
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
            let removed = message.entries.contains(name)
                || message.patterns.iter().any(|p| glob_match(p, name));
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
            bytes in prop_oneof![
                vec(any::<u8>(), 0..64),
                json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            ]
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
}

/// Hostile values in keys and patterns: escaping keeps keys of different
/// values apart, and a pattern built from a value matches only that value.
mod keys {
    use super::*;
    use crate::key::{Layout, glob_escape, glob_match, render_part};

    /// Undoes `render_part` (percent-decoding).
    fn unescape(part: &str) -> String {
        let b = part.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&part[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// A reference matcher for patterns of `*`, `?` and literal bytes.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        let mut can = vec![vec![false; t.len() + 1]; p.len() + 1];
        can[p.len()][t.len()] = true;
        for i in (0..p.len()).rev() {
            for j in (0..=t.len()).rev() {
                can[i][j] = match p[i] {
                    b'*' => can[i + 1][j] || (j < t.len() && can[i][j + 1]),
                    b'?' => j < t.len() && can[i + 1][j + 1],
                    c => j < t.len() && t[j] == c && can[i + 1][j + 1],
                };
            }
        }
        can[0][0]
    }

    fn pair() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            hostile_string().prop_map(|a| (a.clone(), a)),
            (hostile_string(), hostile_string()),
            // Close to each other: one character apart.
            (hostile_string(), any::<char>()).prop_map(|(a, c)| (a.clone(), format!("{a}{c}"))),
        ]
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn an_escaped_part_is_inert_and_reversible(value in hostile_string()) {
            let part = render_part(&value);
            prop_assert!(
                !part.chars().any(|c| matches!(c, ':' | '#' | '*' | '?' | '[' | ']' | '\\' | '{' | '}')
                    || c.is_whitespace() || c.is_control()),
                "{:?}", part
            );
            let mut escaped = String::new();
            crate::escape_part_into(&value, &mut escaped);
            if escaped.len() <= crate::MAX_PART_LEN {
                prop_assert_eq!(unescape(&part), value);
            } else {
                // A long value: a bounded prefix, `~` and a 64-digit hash.
                let (head, hash) = part.split_once('~').expect("a hashed value");
                prop_assert!(head.len() <= 32 && escaped.starts_with(head));
                prop_assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
            }
        }

        #[test]
        fn two_entities_keys_never_collide(
            (a1, a2) in pair(),
            (b1, b2) in pair(),
        ) {
            let key = |a: &str, b: &str| format!("u:{}:{}", render_part(a), render_part(b));
            prop_assert_eq!(key(&a1, &b1) == key(&a2, &b2), a1 == a2 && b1 == b2);
        }

        #[test]
        fn a_pattern_from_a_value_matches_only_that_value(
            (mine, other) in pair(),
            page in any::<u32>(),
        ) {
            let layout = Layout::new("ns", false);
            let pattern = layout.entry_pattern(&format!("search:{}:*", render_part(&mine)));
            let key = format!("search:{}:{page}", render_part(&other));
            let name = layout.entry(&key);
            if key.len() <= crate::MAX_KEY_LEN {
                prop_assert_eq!(glob_match(&pattern, &name), mine == other);
            } else {
                // A bounded key keeps 128 bytes of it: a pattern that needs
                // more cannot match (documented), and never matches another
                // value's key.
                prop_assert!(!glob_match(&pattern, &name) || mine == other);
            }
        }

        #[test]
        fn a_glob_escaped_text_matches_only_itself((text, other) in pair()) {
            prop_assert!(glob_match(&glob_escape(&text), &text));
            prop_assert_eq!(glob_match(&glob_escape(&text), &other), text == other);
        }

        #[test]
        fn no_pattern_reaches_outside_the_namespace(
            pattern in vec(proptest::sample::select(b"*?[]^-\\:#ab".to_vec()), 0..24),
            name in vec(proptest::sample::select(b"*?[]^-\\:#abns".to_vec()), 0..24),
        ) {
            let pattern = String::from_utf8(pattern).unwrap();
            let name = String::from_utf8(name).unwrap();
            let layout = Layout::new("ns", false);
            if !name.starts_with("ns:") {
                prop_assert!(!glob_match(&layout.entry_pattern(&pattern), &name));
            }
        }

        #[test]
        fn any_pattern_and_text_match_without_panicking(
            pattern in vec(prop_oneof![proptest::sample::select(b"*?[]^-\\ab".to_vec()), any::<u8>()], 0..40),
            text in vec(prop_oneof![proptest::sample::select(b"*?[]^-\\ab".to_vec()), any::<u8>()], 0..40),
        ) {
            let pattern = String::from_utf8_lossy(&pattern);
            let text = String::from_utf8_lossy(&text);
            let _ = glob_match(&pattern, &text);
        }

        #[test]
        fn stars_and_question_marks_match_like_the_reference(
            pattern in vec(proptest::sample::select(b"*?ab".to_vec()), 0..12),
            text in vec(proptest::sample::select(b"ab".to_vec()), 0..12),
        ) {
            let p = String::from_utf8(pattern.clone()).unwrap();
            let t = String::from_utf8(text.clone()).unwrap();
            prop_assert_eq!(glob_match(&p, &t), reference(&pattern, &text), "{} ~ {}", p, t);
        }
    }
}
