//! Requests to Redis: every one bounded in time, every error copied as redacted text.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, ScriptInvocation};

use crate::error::RedisError;

/// Removes the store's password from every message that leaves the crate (a Redis error
/// does not normally carry it; this makes sure).
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secret: Option<Arc<str>>,
}

impl Redactor {
    pub(crate) fn new(secret: Option<String>) -> Redactor {
        Redactor {
            secret: secret.filter(|s| !s.is_empty()).map(Arc::from),
        }
    }

    /// `text` with the password replaced by `***`.
    pub(crate) fn clean(&self, text: &str) -> String {
        match &self.secret {
            Some(s) => text.replace(&**s, "***"),
            None => text.to_owned(),
        }
    }

    /// A Redis error as a redacted [`RedisError::Redis`].
    pub(crate) fn error(&self, e: &redis::RedisError) -> RedisError {
        RedisError::Redis {
            message: self.clean(&e.to_string()),
        }
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor")
    }
}

/// The store's connection: a [`ConnectionManager`] (one multiplexed connection that
/// reconnects by itself), the bound of one request, the redactor and the closed flag.
#[derive(Clone)]
pub(crate) struct Conn {
    manager: ConnectionManager,
    /// The longest one request may take, reconnection included.
    limit: Duration,
    pub(crate) redactor: Redactor,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn new(
        manager: ConnectionManager,
        limit: Duration,
        redactor: Redactor,
        closed: Arc<AtomicBool>,
    ) -> Conn {
        Conn {
            manager,
            limit,
            redactor,
            closed,
        }
    }

    fn check_open(&self) -> Result<(), RedisError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(RedisError::Closed);
        }
        Ok(())
    }

    /// Run one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        self.check_open()?;
        let mut m = self.manager.clone();
        match tokio::time::timeout(self.limit, cmd.query_async::<T>(&mut m)).await {
            Ok(r) => r.map_err(|e| self.redactor.error(&e)),
            Err(_) => Err(RedisError::Timeout { waited: self.limit }),
        }
    }

    /// Run a script (EVALSHA, loading it first when Redis does not know it).
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        self.check_open()?;
        let mut m = self.manager.clone();
        match tokio::time::timeout(self.limit, inv.invoke_async::<T>(&mut m)).await {
            Ok(r) => r.map_err(|e| self.redactor.error(&e)),
            Err(_) => Err(RedisError::Timeout { waited: self.limit }),
        }
    }
}
