//! Building keys from templates, and keeping user data from changing their
//! meaning.
//!
//! A key template such as `"post:{id}"` is split by the macro into literal
//! parts and placeholders; at run time a [`KeyBuilder`] appends the literals
//! as they are and each placeholder's value [escaped](escape_part_into):
//! characters that separate key segments (`:`, `#`, whitespace) or have a
//! meaning in a Redis glob (`* ? [ ] \`), hash tags (`{ }`) and `~` are
//! percent-encoded. So a value can never make two entities' keys collide
//! (`a:b` + `c` against `a` + `b:c`), and a value interpolated into a pattern
//! can never widen it. A long value is replaced by a prefix, `~` and its
//! SHA-256 (the same in keys and patterns), and a long key by a prefix and
//! its SHA-256 ([`bound_key`]), so names stay bounded.

use std::fmt::{self, Write};

/// Appends literal parts and escaped values into one key.
///
/// ```
/// use cache_runtime::__private::KeyBuilder;
/// let mut key = KeyBuilder::new();
/// key.lit("post:");
/// key.part(&"a:b*");
/// assert_eq!(key.finish(), "post:a%3Ab%2A");
/// ```
#[derive(Debug, Default, Clone)]
pub struct KeyBuilder {
    buf: Key,
}

/// A key as a cached read holds it: up to 24 bytes in place, longer on
/// the heap (a typical key, `user:12345`, takes no allocation).
#[doc(hidden)]
pub type Key = compact_str::CompactString;

impl KeyBuilder {
    /// An empty key.
    pub fn new() -> Self {
        KeyBuilder {
            buf: Key::default(),
        }
    }

    /// An empty key with room for `capacity` bytes (in place up to 24).
    pub fn with_capacity(capacity: usize) -> Self {
        KeyBuilder {
            buf: Key::with_capacity(capacity),
        }
    }

    /// Appends literal text as it is.
    pub fn lit(&mut self, text: &str) -> &mut Self {
        self.buf.push_str(text);
        self
    }

    /// Appends a value through its `Display` form, escaped; an escaped
    /// value longer than [`MAX_PART_LEN`] is replaced by its first 32 bytes,
    /// `~` and its SHA-256 (a value can never contain `~` itself: it is
    /// escaped), so that a key stays short and a pattern built from the same
    /// value still matches it.
    pub fn part<T: fmt::Display + ?Sized>(&mut self, value: &T) -> &mut Self {
        let start = self.buf.len();
        let mut w = EscapingWriter { out: &mut self.buf };
        // Writing into a String cannot fail; a Display impl that errors
        // leaves what it wrote so far.
        let _ = write!(w, "{value}");
        if self.buf.len() - start > MAX_PART_LEN {
            let hashed = bound_part(&self.buf[start..]);
            self.buf.truncate(start);
            self.buf.push_str(&hashed);
        }
        self
    }

    /// Appends a value that was already rendered and escaped (see
    /// [`render_part`]).
    pub fn rendered(&mut self, escaped: &str) -> &mut Self {
        self.buf.push_str(escaped);
        self
    }

    /// The finished key.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.buf).into_string()
    }

    /// The finished key, in place when it is short (what `#[cached]` reads
    /// with).
    #[doc(hidden)]
    #[inline]
    pub fn finish_key(&mut self) -> Key {
        std::mem::take(&mut self.buf)
    }
}

/// A key part as the macros append it: `(&Part(&v)).kind().append(&mut key, &v)`
/// picks, by `v`'s type (autoref, as `anyhow`'s `kind` module does), an
/// integer's digits written straight into the key (they never need
/// escaping; no `fmt`), or else [`KeyBuilder::part`] (`Display`, escaped).
/// Both render the same text. A type that is neither is reported as not
/// `Display`, at the placeholder.
#[doc(hidden)]
#[derive(Debug)]
pub struct Part<'a, T: ?Sized>(pub &'a T);

#[doc(hidden)]
#[derive(Debug)]
pub struct IntegerKind;

#[doc(hidden)]
#[derive(Debug)]
pub struct DisplayKind;

#[doc(hidden)]
pub trait IntegerPart {
    #[inline]
    fn kind(&self) -> IntegerKind {
        IntegerKind
    }
}

impl<T: itoa::Integer> IntegerPart for Part<'_, T> {}

#[doc(hidden)]
pub trait DisplayPart {
    #[inline]
    fn kind(&self) -> DisplayKind {
        DisplayKind
    }
}

impl<T: ?Sized> DisplayPart for &Part<'_, T> {}

impl IntegerKind {
    #[inline]
    pub fn append<T: itoa::Integer + Copy>(self, key: &mut KeyBuilder, value: &T) {
        key.buf.push_str(itoa::Buffer::new().format(*value));
    }
}

impl DisplayKind {
    #[inline]
    pub fn append<T: fmt::Display + ?Sized>(self, key: &mut KeyBuilder, value: &T) {
        key.part(value);
    }
}

/// Renders a value as an escaped key part on its own.
pub fn render_part<T: fmt::Display + ?Sized>(value: &T) -> String {
    let mut key = KeyBuilder::new();
    key.part(value);
    key.finish()
}

struct EscapingWriter<'a> {
    out: &'a mut Key,
}

impl fmt::Write for EscapingWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_part_into(s, self.out);
        Ok(())
    }
}

fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '%' | ':' | '#' | '*' | '?' | '[' | ']' | '\\' | '{' | '}' | '~'
    ) || c.is_whitespace()
        || c.is_control()
}

/// Appends `value` to `out`, percent-encoding separators, glob
/// metacharacters, whitespace and control characters.
pub(crate) fn escape_part_into<W: Write>(value: &str, out: &mut W) {
    // Writing into a string cannot fail.
    if !value.chars().any(needs_escape) {
        let _ = out.write_str(value);
        return;
    }
    for c in value.chars() {
        if needs_escape(c) {
            let mut bytes = [0u8; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                let _ = out.write_char('%');
                let _ = out.write_char(char::from(HEX[usize::from(b >> 4)]));
                let _ = out.write_char(char::from(HEX[usize::from(b & 0xf)]));
            }
        } else {
            let _ = out.write_char(c);
        }
    }
}

/// Escapes every glob metacharacter of `text`, so that it matches only itself
/// in a Redis `MATCH` pattern.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Matches `text` against a glob `pattern` with the semantics of Redis's
/// `MATCH`/`KEYS` (`*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`).
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    glob_match_bytes(pattern.as_bytes(), text.as_bytes())
}

fn glob_match_bytes(mut p: &[u8], mut t: &[u8]) -> bool {
    // Iterative matcher with one backtracking point for the last `*`.
    let mut star: Option<(&[u8], &[u8])> = None;
    loop {
        if let Some((&pc, prest)) = p.split_first() {
            match pc {
                b'*' => {
                    star = Some((prest, t));
                    p = prest;
                    continue;
                }
                b'?' if !t.is_empty() => {
                    p = prest;
                    t = &t[1..];
                    continue;
                }
                b'[' if !t.is_empty() => {
                    if let Some((matched, rest)) = match_class(prest, t[0])
                        && matched
                    {
                        p = rest;
                        t = &t[1..];
                        continue;
                    }
                }
                b'\\' if !prest.is_empty() && !t.is_empty() && prest[0] == t[0] => {
                    p = &prest[1..];
                    t = &t[1..];
                    continue;
                }
                c if c != b'?' && c != b'[' && c != b'\\' && !t.is_empty() && c == t[0] => {
                    p = prest;
                    t = &t[1..];
                    continue;
                }
                _ => {}
            }
        } else if t.is_empty() {
            return true;
        }
        // Mismatch: let the last `*` swallow one more byte, if there is one.
        match star {
            Some((after_star, st)) if !st.is_empty() => {
                star = Some((after_star, &st[1..]));
                p = after_star;
                t = &st[1..];
            }
            _ => return false,
        }
    }
}

/// Matches one byte against a `[...]` class whose body starts at `p`;
/// returns whether it matched and the pattern after the closing `]`.
fn match_class(mut p: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let negate = p.first() == Some(&b'^');
    if negate {
        p = &p[1..];
    }
    let mut matched = false;
    loop {
        match p {
            [] => return None,
            [b']', rest @ ..] => return Some((matched != negate, rest)),
            [b'\\', x, rest @ ..] => {
                matched |= *x == c;
                p = rest;
            }
            [lo, b'-', hi, rest @ ..] if *hi != b']' => {
                let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                matched |= (lo..=hi).contains(&c);
                p = rest;
            }
            [x, rest @ ..] => {
                matched |= *x == c;
                p = rest;
            }
        }
    }
}

/// Where a namespace's keys live. Entries are `ns:key`; the runtime's own
/// bookkeeping lives under `ns#...`, which no entry key or pattern can reach.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    namespace: String,
    /// What every stored name starts with: the namespace, or on a Redis
    /// Cluster `{namespace}`, a hash tag that puts all of the namespace's
    /// names in one slot so that each script's keys live on one node.
    keys: String,
    entry_prefix: String,
}

/// Escaped placeholder values longer than this (in bytes) are stored as a
/// prefix and a hash: see [`KeyBuilder::part`].
pub const MAX_PART_LEN: usize = 128;

/// The first 32 bytes of an escaped value (never cut inside a `%XX`), `~`,
/// and the SHA-256 of the whole escaped value.
fn bound_part(escaped: &str) -> String {
    use sha2::Digest as _;
    let mut cut = 32.min(escaped.len());
    while !escaped.is_char_boundary(cut) {
        cut -= 1;
    }
    // Do not split a %XX escape.
    if let Some(p) = escaped[..cut].rfind('%')
        && cut - p < 3
    {
        cut = p;
    }
    let mut out = String::with_capacity(cut + 1 + 64);
    out.push_str(&escaped[..cut]);
    out.push('~');
    for b in sha2::Sha256::digest(escaped.as_bytes()) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Keys longer than this (in bytes, after escaping) are stored under a
/// bounded name: their first 128 bytes, `#sha256:` and the SHA-256 of the
/// whole key (200 bytes in all). A pattern then sees only those 128 bytes.
pub const MAX_KEY_LEN: usize = 256;

/// How much of a long key is kept readable in front of its hash, so that
/// pattern deletes anchored on the start of a key still match it.
const KEPT_PREFIX: usize = 128;

/// A key as it is stored: itself if at most [`MAX_KEY_LEN`] bytes, else its
/// first 128 bytes followed by `#sha256:` and the SHA-256 of the whole key
/// (200 bytes in all, so bounding is idempotent). A placeholder value can
/// never produce `#` (it is escaped), so a bounded key cannot collide with a
/// key built from values; two long keys collide only if SHA-256 does.
#[inline]
pub(crate) fn bound_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.len() <= MAX_KEY_LEN {
        std::borrow::Cow::Borrowed(key)
    } else {
        std::borrow::Cow::Owned(bound_long_key(key))
    }
}

/// [`bound_key`] of a key longer than [`MAX_KEY_LEN`].
#[cold]
fn bound_long_key(key: &str) -> String {
    use sha2::Digest as _;
    let mut cut = KEPT_PREFIX;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(cut + 8 + 64);
    out.push_str(&key[..cut]);
    out.push_str("#sha256:");
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// An entry's name (`ns:key`, the key bounded by [`bound_key`]) as its two
/// parts, written out only where it is used: a Redis command writes it into
/// its own buffer, so a hit's read builds no string for it; the in-process
/// store reads it from a buffer reused by the thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryName<'a> {
    prefix: &'a str,
    /// The key as the caller gave it (bounded when written).
    key: &'a str,
}

thread_local! {
    /// The buffer [`EntryName::with_str`] writes names into.
    static NAME: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl EntryName<'_> {
    /// The name's length in bytes.
    pub(crate) fn len(self) -> usize {
        self.prefix.len() + bound_key(self.key).len()
    }

    /// The name, owned.
    pub(crate) fn to_owned(self) -> String {
        let key = bound_key(self.key);
        let mut name = String::with_capacity(self.prefix.len() + key.len());
        name.push_str(self.prefix);
        name.push_str(&key);
        name
    }

    /// Runs `f` on the name, written into the thread's buffer (no
    /// allocation once the buffer has grown). Within `f` another name is
    /// written out as an owned string (the buffer is borrowed).
    pub(crate) fn with_str<R>(self, f: impl FnOnce(&str) -> R) -> R {
        NAME.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut name) => {
                name.clear();
                name.push_str(self.prefix);
                name.push_str(&bound_key(self.key));
                f(&name)
            }
            Err(_) => f(&self.to_owned()),
        })
    }
}

impl fmt::Display for EntryName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix)?;
        f.write_str(&bound_key(self.key))
    }
}

/// One argument, written straight into the command's buffer.
#[cfg(feature = "redis")]
impl redis::ToRedisArgs for EntryName<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write as _;
        let key = bound_key(self.key);
        let mut arg = out.writer_for_next_arg();
        // Writing into the command's buffer (a `Vec`) cannot fail.
        let _ = arg.write_all(self.prefix.as_bytes());
        let _ = arg.write_all(key.as_bytes());
    }
}

impl Layout {
    /// The names of `namespace`; `cluster` wraps it in a hash tag.
    pub(crate) fn new(namespace: &str, cluster: bool) -> Self {
        let keys = if cluster {
            format!("{{{namespace}}}")
        } else {
            namespace.to_owned()
        };
        Layout {
            namespace: namespace.to_owned(),
            entry_prefix: format!("{keys}:"),
            keys,
        }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn entry(&self, key: &str) -> String {
        self.entry_name(key).to_owned()
    }

    /// The entry name of `key`, not written out (see [`EntryName`]).
    pub(crate) fn entry_name<'a>(&'a self, key: &'a str) -> EntryName<'a> {
        EntryName {
            prefix: &self.entry_prefix,
            key,
        }
    }

    pub(crate) fn entry_pattern(&self, pattern: &str) -> String {
        format!("{}{}", glob_escape(&self.entry_prefix), pattern)
    }

    fn name(&self, kind: &str, key: &str) -> String {
        format!("{}{kind}{}", self.keys, bound_key(key))
    }

    /// The sorted set of the entries filed under `tag`.
    pub(crate) fn tag(&self, tag: &str) -> String {
        self.name("#tagged:", tag)
    }

    pub(crate) fn key_marker(&self, key: &str) -> String {
        self.name("#inv:k:", key)
    }

    /// The set of entries that depend on the entry under `key`.
    pub(crate) fn dependents(&self, key: &str) -> String {
        self.name("#dependents:", key)
    }

    /// The prefixes a store needs to walk dependency cascades: from an entry
    /// name to its marker and to the set of its dependents.
    pub(crate) fn prefixes(&self) -> Prefixes {
        Prefixes {
            entry: self.entry_prefix.clone(),
            key_marker: self.key_marker(""),
            dependents: self.dependents(""),
            depends_of: format!("{}#depsof:", self.keys),
            patterns: format!("{}#patterns", self.keys),
        }
    }

    pub(crate) fn tag_marker(&self, tag: &str) -> String {
        self.name("#inv:t:", tag)
    }

    /// The lock of a `lock = "distributed"` loader of the entry `key`.
    pub(crate) fn lock(&self, key: &str) -> String {
        self.name("#lock:", key)
    }

    /// A lock taken with `Cache::try_lock` (apart from loaders' locks).
    pub(crate) fn user_lock(&self, name: &str) -> String {
        self.name("#ulock:", name)
    }

    /// The stream of the write-behind queue `name` (and, with suffixes, its
    /// companions: all in the namespace's slot).
    pub(crate) fn write_behind(&self, name: &str) -> String {
        self.name("#wb:", name)
    }

    /// The channel on which a loader holding a distributed lock announces
    /// that its entry landed. Channels are not keys: no hash tag.
    pub(crate) fn landed_channel(&self) -> String {
        format!("{}#landed", self.namespace)
    }

    /// The channel on which invalidations announce what they removed, for
    /// in-process tiers.
    pub(crate) fn coherence_channel(&self) -> String {
        format!("{}#inv", self.namespace)
    }

    /// The pattern of the channels events are published on.
    pub(crate) fn events_pattern(&self) -> String {
        format!("{}:*", self.namespace)
    }

    /// The key that makes an event with an id, heard by every instance,
    /// apply once: the first instance to set it applies the event.
    pub(crate) fn event_claim(&self, id: &str) -> String {
        self.name("#evt:", &render_part(id))
    }

    pub(crate) fn version(&self, name: &str) -> String {
        self.name("#ver:", name)
    }

    pub(crate) fn seq(&self) -> String {
        format!("{}#seq", self.keys)
    }

    /// The `run_id` of the server process the sequence number's epoch was
    /// drawn on.
    pub(crate) fn server_id(&self) -> String {
        format!("{}#srv", self.keys)
    }
}

/// Name prefixes of one namespace: an entry is `entry` followed by its key,
/// its invalidation marker `key_marker` followed by the key, and the set of
/// entries that depend on it `dependents` followed by the key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prefixes {
    pub(crate) entry: String,
    pub(crate) key_marker: String,
    pub(crate) dependents: String,
    /// + key: the keys the entry depends on, directly or not.
    pub(crate) depends_of: String,
    /// The namespace's pattern markers (not a prefix: the one name).
    pub(crate) patterns: String,
}

/// Checks a namespace: non-empty, and free of the characters that separate
/// or match keys.
pub(crate) fn validate_namespace(ns: &str) -> Result<(), String> {
    if ns.is_empty() {
        return Err("the namespace must not be empty".into());
    }
    if let Some(c) = ns.chars().find(|c| {
        matches!(c, ':' | '#' | '*' | '?' | '[' | ']' | '\\' | '{' | '}')
            || c.is_whitespace()
            || c.is_control()
    }) {
        return Err(format!(
            "the namespace `{ns}` contains `{}`; use letters, digits, `-`, `_` or `.`",
            c.escape_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read's key as `#[cached]` builds it (`finish_key`) is kept in
    /// place up to 24 bytes, escaped parts included, and on the heap past
    /// that; `finish` gives the same text.
    #[test]
    fn a_short_key_is_built_without_an_allocation() {
        let build = |id: &dyn fmt::Display| {
            let mut key = KeyBuilder::with_capacity(5);
            key.lit("user:");
            key.part(id);
            (key.clone().finish(), key.finish_key())
        };
        let (text, key) = build(&"a:b c");
        assert_eq!(
            (text.as_str(), key.as_str()),
            ("user:a%3Ab%20c", "user:a%3Ab%20c")
        );
        assert!(!key.is_heap_allocated(), "a 14-byte key is kept in place");
        let (text, key) = build(&"x".repeat(20));
        assert_eq!(key.as_str(), text);
        assert!(key.is_heap_allocated(), "a 25-byte key is not");
    }

    /// Every way an entry name is written out gives the same name: the
    /// one a fill stores under is the one a hit's `GET` reads (long keys
    /// bounded alike), in process as on Redis.
    #[test]
    fn an_entry_name_is_the_same_however_it_is_written() {
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for (layout, key) in [
            (Layout::new("ns", false), "post:7"),
            (Layout::new("ns", true), "post:7"),
            (Layout::new("ns", false), long.as_str()),
        ] {
            let name = layout.entry_name(key);
            let expected = format!("{}{}", layout.entry_prefix, bound_key(key));
            assert_eq!(name.to_owned(), expected);
            assert_eq!(name.to_string(), expected);
            assert_eq!(name.len(), expected.len());
            assert_eq!(name.with_str(str::to_owned), expected);
            // Written while the thread's buffer holds another name.
            let nested = layout
                .entry_name("other")
                .with_str(|outer| (outer.to_owned(), name.with_str(str::to_owned)));
            assert_eq!(nested, (layout.entry("other"), expected.clone()));
            #[cfg(feature = "redis")]
            {
                let mut cmd = redis::Cmd::new();
                cmd.arg("GET").arg(name);
                let mut plain = redis::Cmd::new();
                plain.arg("GET").arg(&expected);
                assert_eq!(cmd.get_packed_command(), plain.get_packed_command());
            }
        }
        assert!(Layout::new("ns", false).entry(&long).len() < long.len());
    }

    /// What the macros append for a part, through the type's choice.
    macro_rules! appended {
        ($v:expr) => {{
            let mut key = KeyBuilder::new();
            let v = $v;
            (&Part(&v)).kind().append(&mut key, &v);
            key.finish()
        }};
    }

    #[test]
    fn integer_parts_render_as_display_does() {
        macro_rules! same {
            ($($v:expr),*) => {$(
                assert_eq!(appended!($v), render_part(&$v), "{}", stringify!($v));
            )*};
        }
        same!(
            0u8,
            u8::MAX,
            i8::MIN,
            u16::MAX,
            i16::MIN,
            u32::MAX,
            i32::MIN,
            -1i32
        );
        same!(
            0u64,
            7u64,
            u64::MAX,
            i64::MIN,
            i64::MAX,
            usize::MAX,
            isize::MIN
        );
        same!(u128::MAX, i128::MIN, 1_000_000u64);
        // Anything else goes through `Display`, escaped.
        assert_eq!(appended!("a:b"), "a%3Ab");
        assert_eq!(appended!(String::from("x y")), render_part("x y"));
        assert_eq!(appended!(1.5f64), "1.5");
    }

    #[test]
    fn a_bounded_key_is_200_bytes_and_bounding_is_idempotent() {
        let long = format!("search:{}", "x".repeat(1000));
        let stored = bound_key(&long);
        assert_eq!(stored.len(), 200);
        assert!(stored.starts_with("search:xxx"));
        assert_eq!(bound_key(&stored), stored);
        assert_eq!(bound_key("post:1"), "post:1");
    }

    #[test]
    fn escaping_prevents_collisions() {
        let a = {
            let mut k = KeyBuilder::new();
            k.lit("u:").part("a:b").lit(":").part("c");
            k.finish()
        };
        let b = {
            let mut k = KeyBuilder::new();
            k.lit("u:").part("a").lit(":").part("b:c");
            k.finish()
        };
        assert_ne!(a, b);
        assert_eq!(render_part("plain-slug_1.2"), "plain-slug_1.2");
        assert_eq!(render_part("50%"), "50%25");
        assert_eq!(render_part("a b\n"), "a%20b%0A");
        assert_eq!(render_part("é"), "é");
        assert_eq!(render_part(&42), "42");
    }

    #[test]
    fn escaped_values_never_widen_a_pattern() {
        for hostile in ["*", "?", "[a-z]", "\\", "x*y", "]["] {
            let pattern = format!("post:{}:*", render_part(hostile));
            assert!(!glob_match(&pattern, "post:other:1"), "{hostile}");
            assert!(glob_match(
                &pattern,
                &format!("post:{}:1", render_part(hostile))
            ));
        }
    }

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*c", "abbbc"));
        assert!(!glob_match("a*c", "abbb"));
        assert!(glob_match("h?llo", "hello"));
        assert!(glob_match("h[ae]llo", "hallo"));
        assert!(!glob_match("h[^e]llo", "hello"));
        assert!(glob_match("h[a-b]llo", "hbllo"));
        assert!(glob_match("a\\*b", "a*b"));
        assert!(!glob_match("a\\*b", "axb"));
        assert!(glob_match("*:1", "post:x:1"));
        assert!(glob_match(&glob_escape("a*[b]"), "a*[b]"));
        assert!(!glob_match(&glob_escape("a*"), "ab"));
    }

    #[test]
    fn namespace_rules() {
        assert!(validate_namespace("blog-prod_1").is_ok());
        assert!(validate_namespace("a:b").is_err());
        assert!(validate_namespace("").is_err());
        assert!(validate_namespace("a*").is_err());
    }
}
