//! How values become bytes. JSON is the readable default; `postcard` (with
//! the feature of that name) is a compact binary format.
//!
//! Every stored entry names its codec in its header, and is decoded with the
//! codec that wrote it: a cache moved from one codec to another reads the
//! entries written before, so a rolling deploy needs no flush.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, ErrorKind};

/// The format values are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Codec {
    /// JSON through `serde_json`: readable with `redis-cli`, and by services
    /// in other languages.
    #[default]
    Json,
    /// [postcard](https://docs.rs/postcard): compact and fast, but not
    /// self-describing, so types that deserialize "any" (`serde_json::Value`,
    /// `#[serde(untagged)]` or internally tagged enums, `flatten`) and
    /// `skip_serializing_if` do not round-trip; and a changed struct layout
    /// misreads older entries instead of failing (bump a `version =` when a
    /// cached type changes). Feature `postcard`.
    #[cfg(feature = "postcard")]
    Postcard,
}

impl Codec {
    pub(crate) fn id(self) -> u8 {
        match self {
            Codec::Json => 1,
            #[cfg(feature = "postcard")]
            Codec::Postcard => 2,
        }
    }

    pub(crate) fn from_id(id: u8) -> Option<Codec> {
        match id {
            1 => Some(Codec::Json),
            #[cfg(feature = "postcard")]
            2 => Some(Codec::Postcard),
            _ => None,
        }
    }

    pub(crate) fn encode_into<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        match self {
            Codec::Json => serde_json::to_writer(out, value)
                .map_err(|e| Error::with_source(ErrorKind::Codec, "encoding a value as JSON", e)),
            #[cfg(feature = "postcard")]
            Codec::Postcard => postcard::to_io(value, out).map(|_| ()).map_err(|e| {
                Error::with_source(ErrorKind::Codec, "encoding a value with postcard", e)
            }),
        }
    }

    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, Error> {
        match self {
            // Checked as UTF-8 once, as a whole, and parsed as text: read
            // as bytes, serde_json checks each string on its own, about a
            // fifth slower for a 1 KB row (docs/BENCHMARKS.md). Bytes that
            // are not text as a whole are read as bytes, so that what
            // decodes is exactly what `from_slice` decodes (it does not
            // check the strings of fields it skips).
            Codec::Json => match std::str::from_utf8(bytes) {
                Ok(text) => serde_json::from_str(text),
                Err(_) => serde_json::from_slice(bytes),
            }
            .map_err(|e| Error::with_source(ErrorKind::Codec, "decoding a JSON value", e)),
            #[cfg(feature = "postcard")]
            Codec::Postcard => match postcard::take_from_bytes(bytes) {
                // Trailing bytes mean the entry is not what the type expects.
                Ok((value, [])) => Ok(value),
                Ok(_) => Err(Error::new(
                    ErrorKind::Codec,
                    "decoding a postcard value: bytes left over",
                )),
                Err(e) => Err(Error::with_source(
                    ErrorKind::Codec,
                    "decoding a postcard value",
                    e,
                )),
            },
        }
    }
}

#[cfg(all(test, feature = "postcard"))]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Post {
        id: u64,
        title: String,
        tags: Vec<String>,
        draft: Option<bool>,
    }

    fn post() -> Post {
        Post {
            id: 7,
            title: "hello".into(),
            tags: vec!["a".into(), "b".into()],
            draft: None,
        }
    }

    #[test]
    fn postcard_round_trips_and_is_smaller() {
        let (mut json, mut compact) = (Vec::new(), Vec::new());
        Codec::Json.encode_into(&post(), &mut json).unwrap();
        Codec::Postcard.encode_into(&post(), &mut compact).unwrap();
        assert_eq!(Codec::Postcard.decode::<Post>(&compact).unwrap(), post());
        assert!(
            compact.len() * 3 < json.len(),
            "{} vs {}",
            compact.len(),
            json.len()
        );
        assert_eq!(Codec::from_id(Codec::Postcard.id()), Some(Codec::Postcard));
    }

    #[test]
    fn postcard_refuses_what_is_not_its_type() {
        let mut bytes = Vec::new();
        Codec::Postcard.encode_into(&post(), &mut bytes).unwrap();
        assert!(
            Codec::Postcard
                .decode::<Post>(&bytes[..bytes.len() - 1])
                .is_err()
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            Codec::Postcard.decode::<Post>(&longer).is_err(),
            "left over"
        );
        assert!(Codec::Postcard.decode::<Post>(b"{\"id\":1}").is_err());
        assert!(
            Codec::Postcard.decode::<u64>(&[0xff; 11]).is_err(),
            "varint overflow"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(5000))]

        #[test]
        fn postcard_decodes_any_bytes_without_panicking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            let _ = Codec::Postcard.decode::<Post>(&bytes);
            let _ = Codec::Postcard.decode::<Vec<String>>(&bytes);
            let _ = Codec::Postcard.decode::<(u64, Option<f64>, char)>(&bytes);
        }
    }
}
