//! Stored entries: the envelope decoder, and a cache read over bytes that
//! are not what the cache wrote.

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
            // Any payload: a value or an error, never a panic; a JSON
            // payload reads as serde_json reads its bytes (the codec reads
            // valid UTF-8 as text, for speed).
            let value = env.codec.decode::<serde_json::Value>(env.payload).ok();
            let sample = env.codec.decode::<Sample>(env.payload).ok();
            if env.codec == Codec::Json {
                assert_eq!(value, serde_json::from_slice(env.payload).ok());
                assert_eq!(sample, serde_json::from_slice(env.payload).ok());
            }
            sample.map(|v| (meta, v))
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

    /// serde_json, reading bytes, skips the string of a field the type
    /// does not have without checking its UTF-8; the codec, which reads
    /// text when it can, reads those payloads as bytes too.
    #[test]
    fn a_json_payload_reads_as_serde_json_reads_its_bytes(
        value in sample(),
        skipped in vec(prop_oneof![0x20u8..0x22, 0x23u8..0x5C, 0x5Du8..=0xFF], 0..12),
        mutations in vec(mutation(), 0..2),
    ) {
        let mut payload = b"{\"skipped\":\"".to_vec();
        payload.extend_from_slice(&skipped);
        payload.extend_from_slice(b"\",");
        payload.extend_from_slice(&serde_json::to_vec(&value).unwrap()[1..]);
        let payload = mutate(payload, &mutations);
        let read = Codec::Json.decode::<Sample>(&payload).ok();
        prop_assert_eq!(&read, &serde_json::from_slice::<Sample>(&payload).ok());
        if mutations.is_empty() {
            prop_assert_eq!(read, Some(value), "an unknown field is skipped");
        }
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
                    let got = rt.block_on(cache.get_or_load(&key, options, move || async move {
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
