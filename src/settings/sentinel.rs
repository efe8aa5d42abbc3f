//! [`SentinelShard`] (feature `sentinel`): a node that is a Redis Sentinel
//! master group instead of one address, as a setting: the master's name,
//! its sentinels, the credentials and database to use on it.

use std::fmt;

use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{ConnectionInfo, RedisConnectionInfo};

use super::url::{parse_url, redact_url};
use crate::error::Error;

/// A shard served by a Sentinel master group: the master's name, the
/// sentinels that watch it, and the credentials and database to use on the
/// master. Add it with [`Builder::sentinel_node`](crate::Builder::sentinel_node).
///
/// Sentinel URLs take the sentinels' own credentials, if they have any
/// (`redis://:sentinel-password@127.0.0.1:26379`). `Debug` never shows a
/// password.
///
/// ```no_run
/// # async fn run() -> Result<(), fluster::Error> {
/// use fluster::{Failover, SentinelShard, ShardedPool};
///
/// let sentinels = ["redis://127.0.0.1:26379", "redis://127.0.0.1:26380", "redis://127.0.0.1:26381"];
/// let pool = ShardedPool::builder()
///     .sentinel_node("orders-a", SentinelShard::new("orders-a", sentinels).password("secret"))
///     .sentinel_node("orders-b", SentinelShard::new("orders-b", sentinels).password("secret"))
///     // Data that must survive a node should not be written elsewhere
///     // while its shard fails over.
///     .failover(Failover::FailFast)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
///
/// With feature `serde` it deserializes from `{ master, sentinels,
/// username, password, db }` (all but the first two optional), as a
/// [`Config`](crate::Config) node's `sentinel` table.
#[derive(Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct SentinelShard {
    master: String,
    sentinels: Vec<String>,
    #[cfg_attr(feature = "serde", serde(default))]
    username: Option<String>,
    #[cfg_attr(feature = "serde", serde(default))]
    password: Option<String>,
    #[cfg_attr(feature = "serde", serde(default))]
    db: i64,
}

impl fmt::Debug for SentinelShard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sentinels: Vec<String> = self.sentinels.iter().map(|s| redact_url(s)).collect();
        f.debug_struct("SentinelShard")
            .field("master", &self.master)
            .field("sentinels", &sentinels)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl SentinelShard {
    /// The master group `master` as known to the sentinels at these URLs.
    pub fn new<S: AsRef<str>>(master: &str, sentinels: impl IntoIterator<Item = S>) -> Self {
        SentinelShard {
            master: master.to_owned(),
            sentinels: sentinels.into_iter().map(|s| s.as_ref().to_owned()).collect(),
            username: None,
            password: None,
            db: 0,
        }
    }

    /// The ACL user name to use on the master.
    pub fn username(mut self, username: &str) -> Self {
        self.username = Some(username.to_owned());
        self
    }

    /// The password to use on the master.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// The database to select on the master (default 0).
    pub fn db(mut self, db: i64) -> Self {
        self.db = db;
        self
    }

    /// Checks the shard: its sentinels' addresses and what to use on the
    /// master (credentials, database).
    pub(crate) fn checked(&self) -> Result<(Vec<ConnectionInfo>, RedisConnectionInfo), Error> {
        let setting = || format!("sentinel shard `{}`", self.master);
        if self.master.is_empty() {
            return Err(Error::config("sentinel shard", "the master name is empty"));
        }
        if self.sentinels.is_empty() {
            return Err(Error::config(setting(), "no sentinel URLs were given"));
        }
        if self.db < 0 {
            return Err(Error::config(
                setting(),
                format!("the database index must not be negative, got {}", self.db),
            ));
        }
        let sentinels =
            self.sentinels.iter().map(|url| parse_url(url)).collect::<Result<Vec<_>, _>>()?;
        let mut master = RedisConnectionInfo::default().set_db(self.db);
        if let Some(username) = &self.username {
            master = master.set_username(username);
        }
        if let Some(password) = &self.password {
            master = master.set_password(password);
        }
        Ok((sentinels, master))
    }

    /// Checks the shard and builds the client that asks the sentinels.
    pub(crate) fn client(&self) -> Result<SentinelClient, Error> {
        let (sentinels, master) = self.checked()?;
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(master);
        SentinelClient::build(
            sentinels,
            self.master.clone(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(|e| Error::config(format!("sentinel shard `{}`", self.master), e.to_string()))
    }

    /// The master group's name, as the sentinels know it.
    #[cfg(feature = "r2d2")]
    pub(crate) fn master(&self) -> &str {
        &self.master
    }

    /// What the shard is called in messages: its master group's name.
    pub(crate) fn label(&self) -> String {
        format!("sentinel master `{}`", self.master)
    }
}
