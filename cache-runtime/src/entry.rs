//! The stored form of an entry: a small header, then the encoded value.
//!
//! ```text
//! byte 0      0xCA  magic
//! byte 1      1     envelope version
//! byte 2            codec id (1 = JSON)
//! byte 3            flags (bit 0: a cached "absent" value)
//! bytes 4..12       fresh-until, Unix milliseconds, little endian (0 = none)
//! bytes 12..        the value, in the codec's format
//! ```
//!
//! The header lets one `GET` answer everything a read needs (codec, freshness),
//! and lets a reader reject bytes it did not write (a foreign or corrupt value
//! is a miss, never a panic).

use serde::Serialize;

use crate::codec::Codec;
use crate::error::{Error, ErrorKind};

const MAGIC: u8 = 0xCA;
const VERSION: u8 = 1;
const HEADER: usize = 12;
const FLAG_ABSENT: u8 = 1;

/// A decoded header and the value bytes it frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub(crate) codec: Codec,
    pub(crate) absent: bool,
    pub(crate) fresh_until_ms: u64,
    pub(crate) payload: &'a [u8],
}

pub(crate) fn encode<T: Serialize + ?Sized>(
    codec: Codec,
    absent: bool,
    fresh_until_ms: u64,
    value: &T,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[
        MAGIC,
        VERSION,
        codec.id(),
        if absent { FLAG_ABSENT } else { 0 },
    ]);
    out.extend_from_slice(&fresh_until_ms.to_le_bytes());
    codec.encode_into(value, &mut out)?;
    Ok(out)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope<'_>, Error> {
    let bad = |why: &str| Error::new(ErrorKind::Codec, format!("not a cache entry: {why}"));
    if bytes.len() < HEADER {
        return Err(bad("too short"));
    }
    if bytes[0] != MAGIC {
        return Err(bad("bad magic byte"));
    }
    if bytes[1] != VERSION {
        return Err(bad("unknown envelope version"));
    }
    let codec = Codec::from_id(bytes[2]).ok_or_else(|| bad("unknown codec"))?;
    let mut fresh = [0u8; 8];
    fresh.copy_from_slice(&bytes[4..12]);
    Ok(Envelope {
        codec,
        absent: bytes[3] & FLAG_ABSENT != 0,
        fresh_until_ms: u64::from_le_bytes(fresh),
        payload: &bytes[HEADER..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let bytes = encode(Codec::Json, false, 7, &vec![1, 2, 3]).unwrap();
        let env = decode(&bytes).unwrap();
        assert_eq!(env.fresh_until_ms, 7);
        assert!(!env.absent);
        assert_eq!(
            env.codec.decode::<Vec<i32>>(env.payload).unwrap(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn rejects_foreign_bytes_without_panicking() {
        for bytes in [
            &b""[..],
            b"hello",
            b"{\"json\": true, \"padding\": 1}",
            &[0xCA, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xCA, 1, 77, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(decode(bytes).is_err(), "{bytes:?}");
        }
        let env = decode(&[0xCA, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'{']).unwrap();
        assert!(env.codec.decode::<i32>(env.payload).is_err());
    }
}
