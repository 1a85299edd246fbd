//! How values become bytes. JSON is the readable default.

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
}

impl Codec {
    pub(crate) fn id(self) -> u8 {
        match self {
            Codec::Json => 1,
        }
    }

    pub(crate) fn from_id(id: u8) -> Option<Codec> {
        match id {
            1 => Some(Codec::Json),
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
        }
    }

    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, Error> {
        match self {
            Codec::Json => serde_json::from_slice(bytes)
                .map_err(|e| Error::with_source(ErrorKind::Codec, "decoding a JSON value", e)),
        }
    }
}
