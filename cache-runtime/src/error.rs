//! The runtime's one error type.
//!
//! Cache faults are reported through `tracing` and the statistics and never
//! returned to a caller whose own work succeeded; [`Error`] is what the
//! builder and the plain API's explicit store operations return.

use std::fmt;

/// What went wrong, in a form a caller can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The store did not answer within the configured timeout.
    Timeout,
    /// The store could not be reached, or the connection dropped.
    Connection,
    /// The store answered with an error (a script error, a wrong type, ...).
    Store,
    /// A value could not be encoded or decoded.
    Codec,
    /// The cache was configured wrongly (a bad URL, namespace or option).
    Config,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Timeout => "timed out",
            ErrorKind::Connection => "connection error",
            ErrorKind::Store => "store error",
            ErrorKind::Codec => "codec error",
            ErrorKind::Config => "configuration error",
        })
    }
}

/// An error of the cache runtime: a [`kind`](Error::kind), a message, and the
/// underlying error where there is one (see [`std::error::Error::source`]).
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    pub(crate) fn timeout(what: &str, after: std::time::Duration) -> Self {
        Error::new(
            ErrorKind::Timeout,
            format!("{what} did not answer within {after:?}"),
        )
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The store did not answer in time.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// The store could not be reached or the connection dropped.
    pub fn is_connection(&self) -> bool {
        self.kind == ErrorKind::Connection
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        let kind = if e.is_timeout() {
            ErrorKind::Timeout
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            ErrorKind::Connection
        } else {
            ErrorKind::Store
        };
        Error::with_source(kind, "redis", e)
    }
}

/// The result type of the runtime's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A loader ran past its `hard_timeout` and was abandoned, with no
/// fail-safe copy to answer instead. A cached function with `hard_timeout`
/// returns it as its error, so its error type must implement
/// `From<Timeout>`.
///
/// ```
/// use cache_runtime::Timeout;
/// #[derive(Debug)]
/// enum DbError { Timeout(Timeout), NotFound }
/// impl From<Timeout> for DbError {
///     fn from(t: Timeout) -> Self { DbError::Timeout(t) }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout {
    /// The read's name (the function's, or `name = "..."`).
    pub name: &'static str,
    /// The hard timeout it ran past.
    pub after: std::time::Duration,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the loader of `{}` ran past its hard timeout of {:?} and was abandoned",
            self.name, self.after
        )
    }
}

impl std::error::Error for Timeout {}

impl From<Timeout> for std::io::Error {
    fn from(t: Timeout) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, t)
    }
}

impl From<Timeout> for String {
    fn from(t: Timeout) -> Self {
        t.to_string()
    }
}
