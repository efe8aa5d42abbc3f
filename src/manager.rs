//! Redis: the default connection manager, node URLs, Sentinel-backed
//! shards, and the one classifier of what a Redis operation's outcome says
//! about its node, errors *and* error replies.
//!
//! redis 1.x hands an error reply back as `Ok(Value::ServerError)` from
//! `req_packed_command` (and one per command inside a pipeline's replies),
//! so [`failure`] looks inside the `Ok` too: a node answering `LOADING` to
//! every command is boxed by ordinary traffic, not only by a probe.

use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisError, RedisResult, ServerError, Value,
};

use crate::error::Error;
use crate::health::{ClassifyFailure, FailureKind};
use crate::settings::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, Settings};

/// The failure an error reply's code shows, if it is one of a node's.
/// `OOM`, `WRONGTYPE`, `ERR` and the rest say nothing about its health.
fn reply_kind(code: &str) -> Option<FailureKind> {
    match code {
        "LOADING" => Some(FailureKind::Loading),
        "MASTERDOWN" => Some(FailureKind::MasterDown),
        "READONLY" => Some(FailureKind::ReadOnly),
        "NOAUTH" | "WRONGPASS" => Some(FailureKind::Auth),
        _ => None,
    }
}

impl ClassifyFailure for RedisError {
    fn failure_kind(&self) -> Option<FailureKind> {
        if self.is_connection_refusal() {
            Some(FailureKind::Refused)
        } else if self.is_timeout() {
            Some(FailureKind::Timeout)
        } else if self.kind() == ErrorKind::AuthenticationFailed {
            Some(FailureKind::Auth)
        } else if self.kind() == ErrorKind::Parse {
            // Only the wire reaches here: conversions of a reply to a
            // caller's type fail after the pool has seen the reply.
            Some(FailureKind::Protocol)
        } else if let Some(kind) = self.code().and_then(reply_kind) {
            Some(kind)
        } else if is_tls_failure(self) {
            Some(FailureKind::Tls)
        } else if self.is_connection_dropped() {
            Some(FailureKind::Dropped)
        } else if self.is_io_error() {
            Some(FailureKind::Io)
        } else {
            None
        }
    }
}

impl ClassifyFailure for ServerError {
    fn failure_kind(&self) -> Option<FailureKind> {
        reply_kind(self.code())
    }
}

/// The replies an operation returned: one, or a pipeline's.
pub(crate) trait Replies {
    /// Every reply, in order.
    fn replies(&self) -> &[Value];
}

impl Replies for Value {
    fn replies(&self) -> &[Value] {
        std::slice::from_ref(self)
    }
}

impl Replies for Vec<Value> {
    fn replies(&self) -> &[Value] {
        self
    }
}

/// The node failure a Redis operation's outcome shows, with what to log:
/// its error, or the first error reply inside its `Ok` that is a node's.
pub(crate) fn failure<V: Replies>(
    result: &RedisResult<V>,
) -> Option<(FailureKind, &dyn fmt::Display)> {
    match result {
        Err(e) => e.failure_kind().map(|kind| (kind, e as &dyn fmt::Display)),
        Ok(values) => values.replies().iter().find_map(|value| match value {
            Value::ServerError(e) => e.failure_kind().map(|kind| (kind, e as &dyn fmt::Display)),
            _ => None,
        }),
    }
}

/// Whether the error is a TLS failure (a handshake or certificate problem):
/// a `rustls::Error` somewhere in its chain of causes. `redis` keeps I/O
/// errors as `Arc<dyn Error>`, which has to be looked through by hand.
#[cfg(feature = "tls")]
fn is_tls_failure(e: &RedisError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut cause = std::error::Error::source(e);
    while let Some(error) = cause {
        let error: &(dyn std::error::Error + 'static) = match error.downcast_ref::<Shared>() {
            Some(shared) => &**shared,
            None => error,
        };
        let inner = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if error.is::<rustls::Error>() || inner.is_some_and(|i| i.is::<rustls::Error>()) {
            return true;
        }
        cause = error.source();
    }
    false
}

#[cfg(not(feature = "tls"))]
fn is_tls_failure(_: &RedisError) -> bool {
    false
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
        let client = Client::open(info.clone()).map_err(|e| url_error(url, &e))?;
        Ok(Self::from_client(client, &info, connect_timeout, response_timeout))
    }

    /// The manager a builder makes for a URL it has already checked.
    pub(crate) fn from_settings(info: ConnectionInfo, settings: &Settings) -> Result<Self, Error> {
        #[cfg(feature = "tls")]
        let client = match (&settings.tls_root_certificates, &settings.tls_client) {
            (None, None) => Client::open(info.clone()),
            (roots, identity) => {
                let client_tls = identity.as_ref().map(|id| redis::ClientTlsConfig {
                    client_cert: id.cert.clone(),
                    client_key: id.key.clone(),
                });
                let certificates = redis::TlsCertificates { client_tls, root_cert: roots.clone() };
                Client::build_with_tls(info.clone(), certificates)
            }
        };
        #[cfg(not(feature = "tls"))]
        let client = Client::open(info.clone());
        let client = client.map_err(|e| {
            Error::config(format!("node `{}`", address(&info)), describe_url_error(&e))
        })?;
        Ok(Self::from_client(client, &info, settings.connect_timeout, settings.response_timeout))
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
        }
    }

    /// The manager for a Sentinel-backed shard.
    #[cfg(feature = "sentinel")]
    pub(crate) fn sentinel(shard: &SentinelShard, settings: &Settings) -> Result<Self, Error> {
        let target = SentinelTarget::new(shard, settings.connect_timeout)?;
        let (connect, response) = (settings.connect_timeout, settings.response_timeout);
        Ok(RedisManager {
            target: Target::Sentinel(std::sync::Arc::new(target)),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect))
                .set_response_timeout(Some(response)),
            timeouts: (connect, response),
            address: shard.label(),
            db: 0,
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
}

/// Parses and checks a node URL. Errors name the URL with its credentials
/// masked.
pub(crate) fn parse_url(url: &str) -> Result<ConnectionInfo, Error> {
    let bad = |reason: String| Error::config(format!("node URL `{}`", redact_url(url)), reason);
    const SHAPE: &str = "a node URL looks like `redis://[user:password@]host[:port][/db]` \
        (`rediss://` for TLS, `redis+unix:///path` for a socket)";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad(format!("it has no scheme: {SHAPE}")));
    };
    match scheme {
        "redis" | "redis+unix" | "unix" => {}
        "rediss" if cfg!(feature = "tls") => {}
        "rediss" => return Err(bad("`rediss://` needs fluster's `tls` feature".into())),
        other => return Err(bad(format!("`{other}://` is not a Redis scheme: {SHAPE}"))),
    }
    // `user:@host` parses as no password at all, which would connect
    // without AUTH: most likely an empty variable in a template.
    if userinfo(url).is_some_and(|u| u.ends_with(':')) {
        return Err(bad("the password is empty (`:@`); leave out the `:` for no password".into()));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if let Some((_, port)) = host_port.rsplit_once(':').filter(|(host, _)| !host.ends_with(':'))
        && !port.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(bad(format!("`{port}` is not a TCP port (1 to 65535)")));
    }
    let info = url.into_connection_info().map_err(|e| bad(describe_url_error(&e)))?;
    if let ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } = info.addr()
    {
        if host.is_empty() {
            return Err(bad(format!("the host is missing: {SHAPE}")));
        }
        if *port == 0 {
            return Err(bad("port 0 is not a port a server listens on".into()));
        }
    }
    let db = info.redis_settings().db();
    if db < 0 {
        return Err(bad(format!("the database index must not be negative, got {db}")));
    }
    Ok(info)
}

/// The address of a URL's server as a node is named after it: `host:port`,
/// with an IPv6 host in brackets (`[::1]:6379`), or the socket's path.
pub(crate) fn address(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. }
            if host.contains(':') =>
        {
            format!("[{host}]:{port}")
        }
        addr => addr.to_string(),
    }
}

/// The server and database a URL names, to tell two spellings of one
/// node apart from two nodes.
pub(crate) fn target(info: &ConnectionInfo) -> (String, i64) {
    (address(info).to_ascii_lowercase(), info.redis_settings().db())
}

fn url_error(url: &str, e: &RedisError) -> Error {
    Error::config(format!("node URL `{}`", redact_url(url)), describe_url_error(e))
}

/// The `redis` crate's words for a URL problem, which never include the URL.
fn describe_url_error(e: &RedisError) -> String {
    match e.detail() {
        Some(detail) => format!("{} ({detail})", e.category()),
        None => e.to_string(),
    }
}

/// The `user:password` part of a URL, if it has one, and where the host
/// part starts.
fn split_userinfo(url: &str) -> Option<(&str, usize)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some((&rest[..at], start + at))
}

fn userinfo(url: &str) -> Option<&str> {
    split_userinfo(url).map(|(userinfo, _)| userinfo)
}

/// `url` with any user name and password replaced by `***`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match split_userinfo(url) {
        Some((_, at)) => {
            let start = url.find("://").map_or(0, |i| i + 3);
            format!("{}***{}", &url[..start], &url[at..])
        }
        None => url.to_owned(),
    }
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

#[cfg(feature = "sentinel")]
pub use sentinel::SentinelShard;
#[cfg(feature = "sentinel")]
use sentinel::SentinelTarget;

/// Sentinel-backed shards (feature `sentinel`): a node that is a Redis
/// Sentinel master group instead of one address. Its connections always go
/// to the group's current master, asked of the sentinels at each connect;
/// routing uses the shard's name, so a failover never moves keys.
#[cfg(feature = "sentinel")]
mod sentinel {
    use std::fmt;
    use std::time::Duration;

    use redis::aio::MultiplexedConnection;
    use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
    use redis::{AsyncConnectionConfig, RedisConnectionInfo, RedisResult};

    use super::{parse_url, redact_url};
    use crate::error::Error;

    /// A shard served by a Sentinel master group: the master's name, the
    /// sentinels that watch it, and the credentials and database to use on the
    /// master. Add it with [`Builder::sentinel_node`](crate::Builder::sentinel_node).
    ///
    /// Sentinel URLs take the sentinels' own credentials, if they have any
    /// (`redis://:sentinel-password@10.0.0.5:26379`). `Debug` never shows a
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
    #[derive(Clone)]
    pub struct SentinelShard {
        master: String,
        sentinels: Vec<String>,
        username: Option<String>,
        password: Option<String>,
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

        /// Checks the shard and builds the client that asks the sentinels.
        fn client(&self) -> Result<SentinelClient, Error> {
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
            let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(master);
            SentinelClient::build(
                sentinels,
                self.master.clone(),
                Some(node),
                SentinelServerType::Master,
            )
            .map_err(|e| Error::config(setting(), e.to_string()))
        }

        /// What the shard is called in messages: its master group's name.
        pub(super) fn label(&self) -> String {
            format!("sentinel master `{}`", self.master)
        }
    }

    /// The part of a `RedisManager` that asks the sentinels for the master.
    pub(super) struct SentinelTarget {
        /// Locked only while connecting; the client caches its sentinel
        /// connections between lookups.
        client: tokio::sync::Mutex<SentinelClient>,
        /// The same for blocking connections (the synchronous flavour).
        blocking: std::sync::Mutex<SentinelClient>,
        /// Bounds the whole connect: the sentinel lookup and the master's
        /// handshake.
        timeout: Duration,
    }

    impl SentinelTarget {
        pub(super) fn new(shard: &SentinelShard, connect_timeout: Duration) -> Result<Self, Error> {
            Ok(SentinelTarget {
                client: tokio::sync::Mutex::new(shard.client()?),
                blocking: std::sync::Mutex::new(shard.client()?),
                // One timeout for the lookup, one for the master's handshake.
                timeout: connect_timeout * 2,
            })
        }

        /// A connection to the current master.
        pub(super) async fn connect(
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
        pub(super) async fn master_client(&self) -> RedisResult<redis::Client> {
            self.client.lock().await.async_get_client().await
        }

        /// A blocking connection to the current master.
        #[cfg(feature = "r2d2")]
        pub(super) fn connect_blocking(&self) -> RedisResult<redis::Connection> {
            let mut client = self.blocking.lock().unwrap_or_else(|e| e.into_inner());
            client.get_connection()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redaction_hides_user_and_password() {
        assert_eq!(redact_url("redis://u:p@h:1/2"), "redis://***@h:1/2");
        assert_eq!(redact_url("redis://:secret@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_url("rediss://a:b@c@h:1"), "rediss://***@h:1");
        assert_eq!(redact_url("garbage"), "garbage");
        assert_eq!(redact_url("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
    }
}
