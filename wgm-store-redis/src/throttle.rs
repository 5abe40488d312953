//! The login throttle's records ([`ThrottleStore`]) on Redis: one string key per throttle
//! key, `{NAMESPACE}:throttle:<key>` (e.g. `{wgm}:throttle:account:alice`), holding the
//! record and its expiry as JSON, with a Redis expiry (`PX`) at the same moment, so a key
//! nobody fails against any more costs nothing after a while.
//!
//! A read is one script ([`READ`]); a swap reads the key, decides on the record as read (live at the caller's `now`, equal
//! by value to the one expected), and then one script ([`SWAP`]) writes the next record
//! only if the key still holds exactly what was read — the read set of the store's
//! optimistic transactions, for one key. A key that changed in between makes the swap
//! return `false`, and the caller reads again.
//!
//! The keys share the store's namespace (one hash tag) but are not store contents: a
//! snapshot does not read them, an import into an empty namespace ignores them, and a
//! forced restore keeps them (as it keeps the rate limiters' keys).

use async_trait::async_trait;
use time::OffsetDateTime;
use wgm_core::auth::throttle::{ThrottleKey, ThrottleState};
use wgm_core::store::{ThrottleRecord, ThrottleStore};
use wgm_core::Result;

use crate::error::{from_json, to_json, RedisError};
use crate::RedisStore;

/// Compare-and-swap of one throttle key. `KEYS[1]`: the key. `ARGV`: whether a value was
/// read (`0`/`1`), the value read, the new value (empty: delete the key), its expiry in
/// milliseconds. Returns 1 when it wrote, 0 when the key no longer holds what was read
/// (nothing written).
pub(crate) const SWAP: &str = r"
local got = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if got ~= ARGV[2] then return 0 end
elseif got then
  return 0
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
";

/// The values of throttle keys, in order (nil where a key is absent). `KEYS`: the keys.
/// `GET` rather than `MGET`, which answers nil for a key of another type: such a key is
/// an error here, not an absent record.
pub(crate) const READ: &str = r"
local out = {}
for i, k in ipairs(KEYS) do
  out[i] = redis.call('GET', k) or false
end
return out
";

/// A throttle key's value: the record and the Unix second from which it is stale.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Stored {
    state: ThrottleState,
    expires_at: i64,
}

impl Stored {
    /// The state, if the record is live at Unix second `now`.
    fn live(&self, now: i64) -> Option<ThrottleState> {
        (self.expires_at > now).then_some(self.state)
    }
}

fn decode(raw: &str) -> std::result::Result<Stored, RedisError> {
    from_json("login throttle record", raw)
}

impl RedisStore {
    /// The Redis key of a throttle key.
    fn throttle_key(&self, key: &ThrottleKey) -> Result<String> {
        Ok(self.inner.keys.throttle(&key.store_key()?))
    }
}

#[async_trait]
impl ThrottleStore for RedisStore {
    async fn throttle_records(
        &self,
        keys: &[ThrottleKey],
        now: OffsetDateTime,
    ) -> Result<Vec<Option<ThrottleState>>> {
        let names = keys
            .iter()
            .map(|k| self.throttle_key(k))
            .collect::<Result<Vec<_>>>()?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.inner.scripts.throttle_read.prepare_invoke();
        for name in &names {
            inv.key(name);
        }
        let raw: Vec<Option<String>> = self.inner.conn.script(&inv).await?;
        if raw.len() != names.len() {
            return Err(RedisError::BadValue {
                what: "reply to a read of throttle keys",
            }
            .into());
        }
        let now = now.unix_timestamp();
        Ok(raw
            .iter()
            .map(|v| v.as_deref().map(decode).transpose())
            .collect::<std::result::Result<Vec<_>, _>>()?
            .into_iter()
            .map(|s| s.and_then(|s| s.live(now)))
            .collect())
    }

    async fn swap_throttle_record(
        &self,
        key: &ThrottleKey,
        expected: Option<&ThrottleState>,
        new: Option<&ThrottleRecord>,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let name = self.throttle_key(key)?;
        let now = now.unix_timestamp();
        let raw: Option<String> = self.inner.conn.query(redis::cmd("GET").arg(&name)).await?;
        let current = raw
            .as_deref()
            .map(decode)
            .transpose()?
            .and_then(|s| s.live(now));
        if current.as_ref() != expected {
            return Ok(false);
        }
        let (value, ttl_ms) = match new.filter(|r| r.expires_at.unix_timestamp() > now) {
            Some(r) => {
                let expires_at = r.expires_at.unix_timestamp();
                let value = to_json(
                    "login throttle record",
                    &Stored {
                        state: r.state,
                        expires_at,
                    },
                )?;
                (value, expires_at.saturating_sub(now).saturating_mul(1000))
            }
            None => (String::new(), 0),
        };
        let mut inv = self.inner.scripts.throttle_swap.key(&name);
        inv.arg(if raw.is_some() { "1" } else { "0" })
            .arg(raw.as_deref().unwrap_or(""))
            .arg(&value)
            .arg(ttl_ms);
        let wrote: i64 = self.inner.conn.script(&inv).await?;
        Ok(wrote == 1)
    }
}
