//! Hostile values in keys and patterns: escaping keeps keys of different
//! values apart, and a pattern built from a value matches only that value.

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
        crate::key::escape_part_into(&value, &mut escaped);
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
