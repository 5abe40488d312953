//! Conversions between the model and column values shared by both backends.

use std::time::Duration;

use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;
use wgm_core::model::{Peer, PeerStats, RevisionNo};

use crate::error::SqlError;

/// Serialize a model value to its JSON body.
pub(crate) fn to_json<T: Serialize + ?Sized>(
    store: &'static str,
    what: &'static str,
    v: &T,
) -> Result<String, SqlError> {
    serde_json::to_string(v).map_err(|source| SqlError::Encode {
        store,
        what,
        source,
    })
}

/// Decode a JSON body into a model value.
pub(crate) fn from_json<T: DeserializeOwned>(
    store: &'static str,
    what: &'static str,
    s: &str,
) -> Result<T, SqlError> {
    serde_json::from_str(s).map_err(|source| SqlError::Corrupt {
        store,
        what,
        source,
    })
}

/// A peer's body: the peer without its observed statistics (those live in `stats`).
pub(crate) fn peer_body(store: &'static str, p: &Peer) -> Result<String, SqlError> {
    to_json(
        store,
        "peer",
        &Peer {
            stats: PeerStats::default(),
            ..p.clone()
        },
    )
}

/// Rebuild a peer from its body and stats columns.
pub(crate) fn peer_from(store: &'static str, body: &str, stats: &str) -> Result<Peer, SqlError> {
    let mut p: Peer = from_json(store, "peer", body)?;
    p.stats = from_json(store, "peer stats", stats)?;
    Ok(p)
}

/// A time as Unix nanoseconds for ordering and range queries, clamped to the `i64` range
/// (years 1677 to 2262; the exact value is kept in the JSON body).
pub(crate) fn ns(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(if t.unix_timestamp_nanos() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// A time read back from Unix nanoseconds ([`ns`]).
pub(crate) fn time_from_ns(store: &'static str, v: i64) -> Result<OffsetDateTime, SqlError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v)).map_err(|_| SqlError::BadValue {
        store,
        what: "time",
    })
}

/// A device instance (any `u64`) as a 64-bit column: the same bits, read as signed.
pub(crate) fn instance_column(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

/// A device instance read back from its column ([`instance_column`]).
pub(crate) fn instance_from_column(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

/// A non-negative count, revision or sequence number as a column value, saturating.
pub(crate) fn int(u: u64) -> i64 {
    i64::try_from(u).unwrap_or(i64::MAX)
}

/// A revision number read back from a column.
pub(crate) fn rev(store: &'static str, v: i64) -> Result<RevisionNo, SqlError> {
    u64::try_from(v)
        .map(RevisionNo)
        .map_err(|_| SqlError::BadValue {
            store,
            what: "revision number",
        })
}

/// A sequence number or version read back from a column.
pub(crate) fn uint(store: &'static str, what: &'static str, v: i64) -> Result<u64, SqlError> {
    u64::try_from(v).map_err(|_| SqlError::BadValue { store, what })
}

/// How many times a retryable transaction is attempted in all.
pub(crate) const MAX_ATTEMPTS: u32 = 10;

/// Sleep before retry `attempt` (1-based): exponential from 2 ms, capped at 250 ms, with
/// full jitter so that racing writers spread out.
pub(crate) async fn backoff(attempt: u32) {
    let cap = 2u64.saturating_mul(1u64 << attempt.min(7)).min(250);
    let ms = rand::thread_rng().gen_range(1..=cap);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Run `$body` (an expression yielding `Result<_, SqlError>`, usually `async { .. }.await`)
/// until it succeeds, fails with a non-retryable error, or [`MAX_ATTEMPTS`] are used up.
/// With `error Type, |e| ..`, for a body whose error holds its `SqlError` inside
/// (a batch's `BatchFailure`).
macro_rules! retrying {
    ($what:literal, $body:expr) => {
        $crate::codec::retrying!($what, error $crate::error::SqlError, |e| e, $body)
    };
    ($what:literal, error $err:ty, |$e:ident| $inner:expr, $body:expr) => {{
        let mut attempt = 1u32;
        loop {
            let result: Result<_, $err> = $body;
            match result {
                Err($e) if $inner.is_retryable() && attempt < $crate::codec::MAX_ATTEMPTS => {
                    tracing::debug!(operation = $what, attempt, error = %$inner, "retrying transaction");
                    $crate::codec::backoff(attempt).await;
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use retrying;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_numbers_clamp() {
        assert_eq!(ns(OffsetDateTime::UNIX_EPOCH), 0);
        assert_eq!(int(u64::MAX), i64::MAX);
        assert_eq!(int(7), 7);
        assert!(rev("sqlite", -1).is_err());
        assert_eq!(rev("sqlite", 3).unwrap(), RevisionNo(3));
        assert!(uint("sqlite", "seq", -5).is_err());
    }
}
