//! [`RedisManager`]: the default connection manager, for one Redis node
//! given by URL or a Sentinel master group, with connect and response
//! timeouts on every connection it makes (multiplexed, pub/sub, blocking).

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};
use redis::{RedisError, RedisResult};

use crate::backend::near::{NearCache, Tracking, TrackingConnect, TrackingWatch, WATCHED};
use crate::backend::resp2::Doubles;
#[cfg(feature = "sentinel")]
use crate::backend::sentinel::SentinelTarget;
use crate::error::Error;
#[cfg(feature = "sentinel")]
use crate::settings::sentinel::SentinelShard;
use crate::settings::url::{address, describe_url_error, parse_url, url_error};
use crate::settings::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, Settings};

/// Makes ring, fluster's choice, the process's rustls provider if the
/// process has none yet. `redis` builds its TLS configuration from the
/// process-level provider and takes none of ours; with two providers
/// compiled in (ring here, aws-lc-rs from `metrics-exporter-prometheus`,
/// say) rustls would refuse to pick one and panic at the first connect. A
/// provider the application installed is kept.
#[cfg(feature = "tls")]
fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A bb8 connection manager for one Redis node, made from a `redis://` or
/// `rediss://` URL, handing out multiplexed connections with connect and
/// response timeouts.
///
/// Its `Debug` shows the address and database only: never the user name or
/// password of the URL.
#[derive(Clone)]
pub struct RedisManager {
    target: Target,
    config: AsyncConnectionConfig,
    /// Connect and response timeouts, for the connections not made from
    /// `config`: blocking and pub/sub ones.
    timeouts: (Duration, Duration),
    address: String,
    db: i64,
    /// With a near cache: the node spoken in RESP3, for its shared
    /// connection, and the entries that cache holds at most.
    near: Option<(Client, NonZeroUsize)>,
}

/// Where connections go.
// One per node, and `Direct` is the common case: boxing it would only add
// a pointer chase to every connect.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Target {
    /// One address.
    Direct(Client),
    /// Whichever server the sentinels name master at connect time.
    #[cfg(feature = "sentinel")]
    Sentinel(std::sync::Arc<SentinelTarget>),
}

impl fmt::Debug for RedisManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisManager")
            .field("address", &self.address)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl RedisManager {
    /// A manager for the node at `url`, with the default timeouts.
    ///
    /// Accepts what [`redis`] accepts: `redis://[user][:password@]host[:port][/db]`,
    /// `rediss://` for TLS (with the `tls` feature) and `redis+unix:///path`.
    /// The error never repeats the URL's credentials.
    pub fn new(url: &str) -> Result<Self, Error> {
        Self::with_timeouts(url, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT)
    }

    /// A manager for the node at `url` with the given connect and response
    /// timeouts.
    pub fn with_timeouts(
        url: &str,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, Error> {
        let info = parse_url(url)?;
        #[cfg(feature = "tls")]
        tls_provider();
        let client = Client::open(info.clone()).map_err(|e| url_error(url, &e))?;
        Ok(Self::from_client(client, &info, connect_timeout, response_timeout))
    }

    /// The manager a builder makes for a URL it has already checked.
    pub(crate) fn from_settings(info: ConnectionInfo, settings: &Settings) -> Result<Self, Error> {
        #[cfg(feature = "tls")]
        tls_provider();
        let open = |info: ConnectionInfo| {
            #[cfg(feature = "tls")]
            if settings.tls_root_certificates.is_some() || settings.tls_client_certificate.is_some()
            {
                let client_tls =
                    settings.tls_client_certificate.as_ref().map(|id| redis::ClientTlsConfig {
                        client_cert: id.cert.clone().into_bytes(),
                        client_key: id.key.clone().into_bytes(),
                    });
                let root_cert = settings.tls_root_certificates.clone().map(String::into_bytes);
                let certificates = redis::TlsCertificates { client_tls, root_cert };
                return Client::build_with_tls(info, certificates);
            }
            Client::open(info)
        };
        let failed = |e: RedisError| {
            Error::config(format!("node `{}`", address(&info)), describe_url_error(&e))
        };
        let client = open(info.clone()).map_err(failed)?;
        let mut manager =
            Self::from_client(client, &info, settings.connect_timeout, settings.response_timeout);
        if let Some(entries) = NonZeroUsize::new(settings.near_cache) {
            let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
            manager.near =
                Some((open(info.clone().set_redis_settings(resp3)).map_err(failed)?, entries));
        }
        Ok(manager)
    }

    fn from_client(
        client: Client,
        info: &ConnectionInfo,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        RedisManager {
            target: Target::Direct(client),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout)),
            timeouts: (connect_timeout, response_timeout),
            address: address(info),
            db: info.redis_settings().db(),
            near: None,
        }
    }

    /// The manager for a Sentinel-backed shard.
    #[cfg(feature = "sentinel")]
    pub(crate) fn sentinel(shard: &SentinelShard, settings: &Settings) -> Result<Self, Error> {
        let target =
            SentinelTarget::new(shard, settings.connect_timeout, settings.response_timeout)?;
        let (connect, response) = (settings.connect_timeout, settings.response_timeout);
        Ok(RedisManager {
            target: Target::Sentinel(std::sync::Arc::new(target)),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect))
                .set_response_timeout(Some(response)),
            timeouts: (connect, response),
            address: shard.label(),
            db: 0,
            near: None,
        })
    }

    /// A pub/sub connection to the node, under the connect timeout.
    pub(crate) async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        let connect = async {
            let client = match &self.target {
                Target::Direct(client) => client.clone(),
                #[cfg(feature = "sentinel")]
                Target::Sentinel(sentinel) => sentinel.master_client().await?,
            };
            client.get_async_pubsub().await
        };
        match tokio::time::timeout(self.timeouts.0, connect).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no pub/sub connection within the connect timeout",
            )
            .into()),
        }
    }

    /// The node's address as `host:port` (or the socket path): what a node
    /// added with [`Builder::node`](crate::Builder::node) is named after. For
    /// a Sentinel-backed shard, its master group's name.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The server the node's connections go to now, with the database
    /// and credentials they use there: the URL's, or for a
    /// Sentinel-backed shard its current master's, asked of the sentinels
    /// as a connect asks (or why none was found). For a server that
    /// connects to this node itself (a drain's `MIGRATE … AUTH`). Never
    /// shown: it holds the credentials.
    pub(crate) async fn serving(&self) -> Result<ConnectionInfo, String> {
        match &self.target {
            Target::Direct(client) => Ok(client.get_connection_info().clone()),
            #[cfg(feature = "sentinel")]
            Target::Sentinel(sentinel) => sentinel.master().await.map_err(|e| {
                format!("the sentinels of its {} named no master it could reach: {e}", self.address)
            }),
        }
    }
}

/// How a node's pub/sub connections are made (the fleet's news).
pub(crate) type Listen =
    Box<dyn Fn() -> BoxFuture<'static, RedisResult<redis::aio::PubSub>> + Send + Sync>;

impl RedisManager {
    /// How the node's pub/sub connections are made.
    pub(crate) fn listen(&self) -> Listen {
        let manager = self.clone();
        Box::new(move || {
            let manager = manager.clone();
            Box::pin(async move { manager.pubsub().await })
        })
    }

    /// With a near cache: how the node's tracking connection is made.
    pub(crate) fn tracking(&self) -> Option<Tracking<RedisManager>> {
        let (client, entries) = self.near.clone()?;
        let config = self.config.clone();
        let connect: TrackingConnect<RedisManager> = Box::new(move |cache, dropped| {
            Box::pin(connect_tracking(client.clone(), config.clone(), cache, dropped))
        });
        let watch: TrackingWatch<RedisManager> = Box::new(|conn, cache| {
            let mut conn = conn.clone();
            Box::pin(async move {
                let info = redis::cmd("INFO").arg(WATCHED).query_async(&mut conn).await;
                if let Ok(info) = &info {
                    cache.watch(info);
                }
                info
            })
        });
        Some(Tracking { entries, connect, watch })
    }
}

/// A tracking connection: RESP3 with `CLIENT TRACKING ON`, the server's
/// invalidations applied to `cache` as they arrive (before any reply that
/// follows them is handed on). `dropped` is set, and `cache` emptied,
/// when its socket closes, for from then on no invalidation reaches it.
/// Its `INFO` tells `cache` how the server writes doubles, and what it
/// has done unannounced so far ([`NearCache::watch`]); a server that
/// refuses `INFO` gets the defaults.
async fn connect_tracking(
    client: Client,
    config: AsyncConnectionConfig,
    cache: Arc<NearCache>,
    dropped: Arc<AtomicBool>,
) -> RedisResult<MultiplexedConnection> {
    let pushed = cache.clone();
    let config = config.set_push_sender(move |info: PushInfo| {
        let cache = &pushed;
        match (info.kind, info.data.first()) {
            (PushKind::Invalidate, Some(Value::Array(keys))) => {
                for key in keys {
                    if let Value::BulkString(key) = key {
                        cache.invalidate(key);
                    }
                }
            }
            // After FLUSHALL or FLUSHDB the server names no key.
            (PushKind::Invalidate, _) => cache.clear(),
            (PushKind::Disconnection, _) => {
                dropped.store(true, Ordering::Release);
                cache.clear();
            }
            _ => {}
        }
        Ok::<(), std::convert::Infallible>(())
    });
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
    let mut pipe = redis::pipe();
    pipe.cmd("INFO").arg("server").arg(WATCHED).cmd("CLIENT").arg("TRACKING").arg("ON");
    let replies = conn.req_packed_commands(&pipe, 0, 2).await?;
    if let [info, tracking] = &replies[..] {
        if let Value::ServerError(e) = tracking {
            return Err(e.clone().into());
        }
        cache.watch(info);
        let text: Option<String> = redis::from_redis_value_ref(info).ok();
        cache.set_doubles(Doubles::of_server(text.as_deref().unwrap_or("")));
    }
    Ok(conn)
}

impl bb8::ManageConnection for RedisManager {
    type Connection = MultiplexedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        match &self.target {
            Target::Direct(client) => {
                client.get_multiplexed_async_connection_with_config(&self.config).await
            }
            #[cfg(feature = "sentinel")]
            Target::Sentinel(sentinel) => sentinel.connect(&self.config).await,
        }
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING").query_async::<()>(conn).await
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        // bb8 asks this of every connection it takes back: undo a response
        // timeout the last caller set through `DerefMut`, so the next one
        // gets the pool's. Failures are tracked by the pool's own wrapper.
        conn.set_response_timeout(self.timeouts.1);
        false
    }
}

#[cfg(feature = "r2d2")]
impl RedisManager {
    /// A blocking connection with the same target, credentials, TLS roots
    /// and timeouts: what the synchronous flavour connects with.
    pub(crate) fn connect_blocking(&self) -> RedisResult<redis::Connection> {
        let conn = match &self.target {
            Target::Direct(client) => client.get_connection_with_timeout(self.timeouts.0)?,
            #[cfg(feature = "sentinel")]
            Target::Sentinel(sentinel) => sentinel.connect_blocking()?,
        };
        conn.set_read_timeout(Some(self.timeouts.1))?;
        conn.set_write_timeout(Some(self.timeouts.1))?;
        Ok(conn)
    }
}
