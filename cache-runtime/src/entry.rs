//! The stored form of an entry: a small header, then the encoded value.
//!
//! ```text
//! byte 0      0xCA  magic
//! byte 1      2     envelope version
//! byte 2            codec id (1 = JSON)
//! byte 3            flags (bit 0: a cached "absent" value)
//! bytes 4..12       fresh until, Unix milliseconds, little endian (0 = always fresh)
//! bytes 12..20      version stamp (the namespace version it was loaded under)
//! bytes 20..24      what loading it cost, milliseconds (for early refresh)
//! bytes 24..28      the store's epoch when it was filled (0 in process)
//! bytes 28..        the value, in the codec's format
//! ```
//!
//! The header lets one `GET` answer everything a read needs (codec, freshness,
//! version, cost, epoch: an entry a Redis server brought back from an older
//! life, by a restart from a snapshot or a failover, is of an older epoch and
//! is not served),
//! and lets a reader reject bytes it did not write (a foreign or corrupt value
//! is a miss, never a panic).

use serde::Serialize;

use crate::codec::Codec;
use crate::error::{Error, ErrorKind};

const MAGIC: u8 = 0xCA;
const VERSION: u8 = 2;
const HEADER: usize = 28;
/// Where the epoch is, so that a put can be stamped once its epoch is known.
const EPOCH_AT: usize = 24;
const FLAG_ABSENT: u8 = 1;

/// A decoded header and the value bytes it frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub(crate) codec: Codec,
    pub(crate) meta: Meta,
    pub(crate) payload: &'a [u8],
}

/// What the header says about the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Meta {
    pub(crate) absent: bool,
    /// Unix ms after which the entry is stale (0: fresh until it expires).
    pub(crate) fresh_until_ms: u64,
    pub(crate) version: u64,
    pub(crate) cost_ms: u32,
    /// The store's epoch when the entry was filled (see `epoch`).
    pub(crate) epoch: u32,
}

pub(crate) fn encode<T: Serialize + ?Sized>(
    codec: Codec,
    meta: Meta,
    value: &T,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[
        MAGIC,
        VERSION,
        codec.id(),
        if meta.absent { FLAG_ABSENT } else { 0 },
    ]);
    out.extend_from_slice(&meta.fresh_until_ms.to_le_bytes());
    out.extend_from_slice(&meta.version.to_le_bytes());
    out.extend_from_slice(&meta.cost_ms.to_le_bytes());
    out.extend_from_slice(&meta.epoch.to_le_bytes());
    codec.encode_into(value, &mut out)?;
    Ok(out)
}

/// Stamps an encoded entry with the epoch it is stored in.
pub(crate) fn set_epoch(bytes: &mut [u8], epoch: u32) {
    if let Some(field) = bytes.get_mut(EPOCH_AT..EPOCH_AT + 4) {
        field.copy_from_slice(&epoch.to_le_bytes());
    }
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
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
    let meta = Meta {
        absent: bytes[3] & FLAG_ABSENT != 0,
        fresh_until_ms: u64_at(4),
        version: u64_at(12),
        cost_ms: u32_at(20),
        epoch: u32_at(EPOCH_AT),
    };
    Ok(Envelope {
        codec,
        meta,
        payload: &bytes[HEADER..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let meta = Meta {
            absent: false,
            fresh_until_ms: 7,
            version: 3,
            cost_ms: 12,
            epoch: 9,
        };
        let mut bytes = encode(Codec::Json, meta, &vec![1, 2, 3]).unwrap();
        let env = decode(&bytes).unwrap();
        assert_eq!(env.meta, meta);
        assert_eq!(
            env.codec.decode::<Vec<i32>>(env.payload).unwrap(),
            vec![1, 2, 3]
        );
        set_epoch(&mut bytes, 11);
        assert_eq!(decode(&bytes).unwrap().meta.epoch, 11);
    }

    #[test]
    fn rejects_foreign_bytes_without_panicking() {
        for bytes in [
            &b""[..],
            b"hello",
            b"{\"json\": true, \"padding\": 1}",
            &[
                0xCA, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0,
            ],
            &[
                0xCA, 2, 77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0,
            ],
            // The first version's envelope: read as a miss and replaced.
            &[
                0xCA, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'1',
                b'2', b'3', b'4',
            ],
        ] {
            assert!(decode(bytes).is_err(), "{bytes:?}");
        }
        let mut truncated = vec![0xCA, 2, 1, 0];
        truncated.extend_from_slice(&[0; 24]);
        truncated.push(b'{');
        let env = decode(&truncated).unwrap();
        assert!(env.codec.decode::<i32>(env.payload).is_err());
    }
}
