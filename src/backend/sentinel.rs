//! Sentinel-backed shards at run time (feature `sentinel`): connections go
//! to the group's current master, asked of the sentinels at each connect;
//! routing uses the shard's name, so a failover never moves keys.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, ConnectionInfo, RedisError, RedisResult};

use crate::error::Error;
use crate::settings::sentinel::SentinelShard;

/// The part of a `RedisManager` that asks the sentinels for the master.
pub(crate) struct SentinelTarget {
    /// Locked only while connecting; the client caches its sentinel
    /// connections between lookups.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The same for blocking connections (the synchronous flavour), which
    /// `redis`'s blocking client cannot bound in time: asked by hand.
    #[cfg(feature = "r2d2")]
    blocking: blocking::Lookup,
    /// Bounds the whole connect: the sentinel lookup and the master's
    /// handshake.
    timeout: Duration,
}

/// What a connect that ran out of its time fails with, in both flavours.
fn too_late() -> RedisError {
    let text = "no master found through the sentinels in time";
    std::io::Error::new(std::io::ErrorKind::TimedOut, text).into()
}

impl SentinelTarget {
    /// The target of `shard`, its connects bounded by `connect_timeout`
    /// (twice: the lookup, then the master's handshake) and each reply by
    /// `response_timeout`.
    pub(crate) fn new(
        shard: &SentinelShard,
        connect_timeout: Duration,
        #[cfg_attr(not(feature = "r2d2"), allow(unused_variables))] response_timeout: Duration,
    ) -> Result<Self, Error> {
        Ok(SentinelTarget {
            client: tokio::sync::Mutex::new(shard.client()?),
            #[cfg(feature = "r2d2")]
            blocking: blocking::Lookup::new(shard, (connect_timeout, response_timeout))?,
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
        tokio::time::timeout(self.timeout, attempt).await.unwrap_or_else(|_| Err(too_late()))
    }

    /// A client for the current master.
    pub(crate) async fn master_client(&self) -> RedisResult<redis::Client> {
        self.client.lock().await.async_get_client().await
    }

    /// Where the current master listens, with the database and
    /// credentials used on it: [`connect`](Self::connect)'s lookup (the
    /// sentinels name it, a `ROLE` check confirms it), in the same time.
    pub(crate) async fn master(&self) -> RedisResult<ConnectionInfo> {
        let client = tokio::time::timeout(self.timeout, self.master_client()).await;
        Ok(client.unwrap_or_else(|_| Err(too_late()))?.get_connection_info().clone())
    }

    /// A blocking connection to the current master, within the same time
    /// as [`connect`](Self::connect)'s, holding no lock.
    #[cfg(feature = "r2d2")]
    pub(crate) fn connect_blocking(&self) -> RedisResult<redis::Connection> {
        self.blocking.master(std::time::Instant::now() + self.timeout)
    }
}

/// The synchronous flavour's lookup: every wait on the network bounded by
/// the connect or response timeout and by the connect's deadline, and no
/// state shared between connects (so no lock): a hung sentinel or master
/// costs one connect its time, never the next one's.
#[cfg(feature = "r2d2")]
mod blocking {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use redis::{
        Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisConnectionInfo,
        RedisResult, Role,
    };

    use super::too_late;
    use crate::error::Error;
    use crate::settings::sentinel::SentinelShard;

    pub(super) struct Lookup {
        name: String,
        sentinels: Vec<ConnectionInfo>,
        /// Credentials and database for the master.
        master: RedisConnectionInfo,
        /// Connect and response timeouts.
        timeouts: (Duration, Duration),
    }

    impl Lookup {
        pub(super) fn new(
            shard: &SentinelShard,
            timeouts: (Duration, Duration),
        ) -> Result<Self, Error> {
            let (sentinels, master) = shard.checked()?;
            Ok(Lookup { name: shard.master().to_owned(), sentinels, master, timeouts })
        }

        /// A connection to the master the first sentinel that knows a
        /// healthy one names, checked to be master (`ROLE`), by `deadline`.
        pub(super) fn master(&self, deadline: Instant) -> RedisResult<redis::Connection> {
            let mut last = None;
            for sentinel in &self.sentinels {
                let found = self
                    .ask(sentinel, deadline)
                    .and_then(|address| address.into_connection_info())
                    .and_then(|info| {
                        self.connect(info.set_redis_settings(self.master.clone()), deadline)
                    })
                    .and_then(|mut conn| match redis::cmd("ROLE").query(&mut conn)? {
                        Role::Primary { .. } => Ok(conn),
                        _ => Err(not_found("the server it names is not a master")),
                    });
                match found {
                    Ok(conn) => return Ok(conn),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(too_late))
        }

        /// The master's address as `sentinel` knows it, if it does not
        /// think it down.
        fn ask(&self, sentinel: &ConnectionInfo, deadline: Instant) -> RedisResult<ConnectionAddr> {
            let mut conn = self.connect(sentinel.clone(), deadline)?;
            let master: HashMap<String, String> =
                redis::cmd("SENTINEL").arg("MASTER").arg(&self.name).query(&mut conn)?;
            let field = |name: &str| master.get(name).map(String::as_str);
            let healthy = field("flags").is_some_and(|f| {
                f.contains("master") && !f.contains("s_down") && !f.contains("o_down")
            });
            match (field("ip"), field("port").and_then(|p| p.parse().ok())) {
                (Some(ip), Some(port)) if healthy => Ok(ConnectionAddr::Tcp(ip.to_owned(), port)),
                _ => Err(not_found("the sentinel names no healthy master")),
            }
        }

        /// A connection to `info`, its connect and every reply on it
        /// bounded by the timeouts and by `deadline`.
        fn connect(
            &self,
            info: ConnectionInfo,
            deadline: Instant,
        ) -> RedisResult<redis::Connection> {
            let left = || {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() { Err(too_late()) } else { Ok(left) }
            };
            let conn =
                Client::open(info)?.get_connection_with_timeout(self.timeouts.0.min(left()?))?;
            let wait = Some(self.timeouts.1.min(left()?));
            conn.set_read_timeout(wait)?;
            conn.set_write_timeout(wait)?;
            Ok(conn)
        }
    }

    /// What `redis`'s own lookup fails with when no sentinel names a master.
    fn not_found(detail: &'static str) -> redis::RedisError {
        (
            ErrorKind::MasterNameNotFoundBySentinel,
            "master not found through the sentinels",
            detail.to_owned(),
        )
            .into()
    }
}
