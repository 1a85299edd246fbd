//! Invalidation events heard on `ns:*`.

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
        bytes in message_bytes()
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
