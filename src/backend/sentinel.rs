//! Sentinel-backed shards at run time (feature `sentinel`): connections go
//! to the group's current master, asked of the sentinels at each connect;
//! routing uses the shard's name, so a failover never moves keys.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, RedisResult};

use crate::error::Error;
use crate::settings::sentinel::SentinelShard;

/// The part of a `RedisManager` that asks the sentinels for the master.
pub(crate) struct SentinelTarget {
    /// Locked only while connecting; the client caches its sentinel
    /// connections between lookups.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The same for blocking connections (the synchronous flavour).
    #[cfg(feature = "r2d2")]
    blocking: std::sync::Mutex<SentinelClient>,
    /// Bounds the whole connect: the sentinel lookup and the master's
    /// handshake.
    timeout: Duration,
}

impl SentinelTarget {
    pub(crate) fn new(shard: &SentinelShard, connect_timeout: Duration) -> Result<Self, Error> {
        Ok(SentinelTarget {
            client: tokio::sync::Mutex::new(shard.client()?),
            #[cfg(feature = "r2d2")]
            blocking: std::sync::Mutex::new(shard.client()?),
            // One timeout for the lookup, one for the master's handshake.
            timeout: connect_timeout * 2,
        })
    }

    /// A connection to the current master.
    pub(crate) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let attempt = async {
            let mut client = self.client.lock().await;
            client.get_async_connection_with_config(config).await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no master found through the sentinels in time",
            )
            .into()),
        }
    }

    /// A client for the current master.
    pub(crate) async fn master_client(&self) -> RedisResult<redis::Client> {
        self.client.lock().await.async_get_client().await
    }

    /// A blocking connection to the current master.
    #[cfg(feature = "r2d2")]
    pub(crate) fn connect_blocking(&self) -> RedisResult<redis::Connection> {
        let mut client = self.blocking.lock().unwrap_or_else(|e| e.into_inner());
        client.get_connection()
    }
}
