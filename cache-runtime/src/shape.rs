//! What part of a function's return value is cached.
//!
//! The macros pick a shape from the return type as written: `Result<T, E>`
//! caches `Ok(T)`; `Option<T>` caches `Some(T)` (and `None` when asked to);
//! `Result<Option<T>, E>` does both; any other `T` is cached as it is.

use serde::{Serialize, de::DeserializeOwned};

/// What a return value offers to the cache.
#[derive(Debug)]
pub enum Fill<'a, S, I> {
    /// A value to store; `inner` is what tag templates see as `ret`.
    Value {
        /// The stored form.
        stored: &'a S,
        /// The value `{ret.field}` placeholders read.
        inner: &'a I,
    },
    /// An absent value, stored only when negative caching is on.
    Absent(&'a S),
    /// Nothing to store (an error).
    Skip,
}

/// Maps a return type `R` to what is stored and back.
pub trait Shape<R> {
    /// The stored form.
    type Stored: Serialize + DeserializeOwned;
    /// The value `ret` placeholders read.
    type Inner;
    /// What `value` offers to the cache.
    fn split(value: &R) -> Fill<'_, Self::Stored, Self::Inner>;
    /// Rebuilds a return value from its stored form.
    fn join(stored: Self::Stored) -> R;
}

/// `T` cached as it is.
#[derive(Debug, Clone, Copy)]
pub struct Plain;
/// `Option<T>`: `Some` cached, `None` only with negative caching.
#[derive(Debug, Clone, Copy)]
pub struct Opt;
/// `Result<T, E>`: only `Ok` cached.
#[derive(Debug, Clone, Copy)]
pub struct Res;
/// `Result<Option<T>, E>`: `Ok(Some)` cached, `Ok(None)` with negative caching.
#[derive(Debug, Clone, Copy)]
pub struct ResOpt;

impl<T: Serialize + DeserializeOwned> Shape<T> for Plain {
    type Stored = T;
    type Inner = T;
    fn split(value: &T) -> Fill<'_, T, T> {
        Fill::Value {
            stored: value,
            inner: value,
        }
    }
    fn join(stored: T) -> T {
        stored
    }
}

impl<T: Serialize + DeserializeOwned> Shape<Option<T>> for Opt {
    type Stored = Option<T>;
    type Inner = T;
    fn split(value: &Option<T>) -> Fill<'_, Option<T>, T> {
        match value {
            Some(inner) => Fill::Value {
                stored: value,
                inner,
            },
            None => Fill::Absent(value),
        }
    }
    fn join(stored: Option<T>) -> Option<T> {
        stored
    }
}

impl<T: Serialize + DeserializeOwned, E> Shape<Result<T, E>> for Res {
    type Stored = T;
    type Inner = T;
    fn split(value: &Result<T, E>) -> Fill<'_, T, T> {
        match value {
            Ok(v) => Fill::Value {
                stored: v,
                inner: v,
            },
            Err(_) => Fill::Skip,
        }
    }
    fn join(stored: T) -> Result<T, E> {
        Ok(stored)
    }
}

impl<T: Serialize + DeserializeOwned, E> Shape<Result<Option<T>, E>> for ResOpt {
    type Stored = Option<T>;
    type Inner = T;
    fn split(value: &Result<Option<T>, E>) -> Fill<'_, Option<T>, T> {
        match value {
            Ok(stored @ Some(inner)) => Fill::Value { stored, inner },
            Ok(stored @ None) => Fill::Absent(stored),
            Err(_) => Fill::Skip,
        }
    }
    fn join(stored: Option<T>) -> Result<Option<T>, E> {
        Ok(stored)
    }
}

/// Whether a function's result counts as success for `#[invalidates]`.
pub trait Outcome {
    /// The successful value, if the call succeeded.
    type Ok;
    /// The value templates see as `ret`, or `None` for an error.
    fn success(&self) -> Option<&Self::Ok>;
}

/// Any value counts as success.
#[derive(Debug)]
pub struct Always<'a, T>(pub &'a T);
/// `Ok` counts as success; `Err` does not.
#[derive(Debug)]
pub struct OnOk<'a, T, E>(pub &'a Result<T, E>);

impl<T> Outcome for Always<'_, T> {
    type Ok = T;
    fn success(&self) -> Option<&T> {
        Some(self.0)
    }
}

impl<T, E> Outcome for OnOk<'_, T, E> {
    type Ok = T;
    fn success(&self) -> Option<&T> {
        self.0.as_ref().ok()
    }
}

/// What a [`Batch`] holds: its pairs, or its error.
pub type Pairs<B> = Result<Vec<(<B as Batch>::Key, <B as Batch>::Value)>, <B as Batch>::Error>;

/// What a batch read (`#[cached(batch, ...)]`,
/// [`Cache::get_many_or_load`](crate::Cache::get_many_or_load)) returns:
/// the pairs of id and value it found, as a `HashMap<K, V>`, a
/// `BTreeMap<K, V>` or a `Vec<(K, V)>`, or a `Result` of one. Ids with no
/// value are left out.
#[diagnostic::on_unimplemented(
    message = "a batch read returns its values by id, and `{Self}` does not hold pairs",
    label = "return a `HashMap<K, V>`, a `BTreeMap<K, V>` or a `Vec<(K, V)>` (or a `Result` of one)"
)]
pub trait Batch: Sized {
    /// The id.
    type Key;
    /// The value cached under each id's key.
    type Value;
    /// The loader's error (`Infallible` when it cannot fail).
    type Error;
    /// The pairs, or the error.
    fn into_pairs(self) -> Pairs<Self>;
    /// Back from the pairs, or the error.
    fn from_pairs(pairs: Pairs<Self>) -> Self;
}

impl<K: std::hash::Hash + Eq, V, H: std::hash::BuildHasher + Default> Batch
    for std::collections::HashMap<K, V, H>
{
    type Key = K;
    type Value = V;
    type Error = std::convert::Infallible;
    fn into_pairs(self) -> Result<Vec<(K, V)>, Self::Error> {
        Ok(self.into_iter().collect())
    }
    fn from_pairs(pairs: Result<Vec<(K, V)>, Self::Error>) -> Self {
        let Ok(pairs) = pairs;
        pairs.into_iter().collect()
    }
}

impl<K: Ord, V> Batch for std::collections::BTreeMap<K, V> {
    type Key = K;
    type Value = V;
    type Error = std::convert::Infallible;
    fn into_pairs(self) -> Result<Vec<(K, V)>, Self::Error> {
        Ok(self.into_iter().collect())
    }
    fn from_pairs(pairs: Result<Vec<(K, V)>, Self::Error>) -> Self {
        let Ok(pairs) = pairs;
        pairs.into_iter().collect()
    }
}

impl<K, V> Batch for Vec<(K, V)> {
    type Key = K;
    type Value = V;
    type Error = std::convert::Infallible;
    fn into_pairs(self) -> Result<Vec<(K, V)>, Self::Error> {
        Ok(self)
    }
    fn from_pairs(pairs: Result<Vec<(K, V)>, Self::Error>) -> Self {
        let Ok(pairs) = pairs;
        pairs
    }
}

impl<T: Batch<Error = std::convert::Infallible>, E> Batch for Result<T, E> {
    type Key = T::Key;
    type Value = T::Value;
    type Error = E;
    fn into_pairs(self) -> Pairs<Self> {
        self.map(|t| {
            let Ok(pairs) = t.into_pairs();
            pairs
        })
    }
    fn from_pairs(pairs: Pairs<Self>) -> Self {
        pairs.map(|p| T::from_pairs(Ok(p)))
    }
}
