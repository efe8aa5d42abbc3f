//! The default Redis connection manager, URL handling and failure
//! classification for `redis` errors.

use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisError, ServerErrorKind,
};

use crate::builder::Settings;
use crate::error::Error;
use crate::health::FailureKind;
use crate::manager::ClassifyFailure;

impl ClassifyFailure for RedisError {
    fn failure_kind(&self) -> Option<FailureKind> {
        if self.is_connection_refusal() {
            return Some(FailureKind::Refused);
        }
        if self.is_timeout() {
            return Some(FailureKind::Timeout);
        }
        match self.kind() {
            ErrorKind::AuthenticationFailed => return Some(FailureKind::Auth),
            ErrorKind::Server(ServerErrorKind::BusyLoading) => return Some(FailureKind::Loading),
            ErrorKind::Server(ServerErrorKind::MasterDown) => {
                return Some(FailureKind::MasterDown);
            }
            ErrorKind::Server(ServerErrorKind::ReadOnly) => return Some(FailureKind::ReadOnly),
            _ => {}
        }
        if matches!(self.code(), Some("WRONGPASS" | "NOAUTH")) {
            return Some(FailureKind::Auth);
        }
        if is_tls_failure(self) {
            return Some(FailureKind::Tls);
        }
        if self.is_connection_dropped() {
            return Some(FailureKind::Dropped);
        }
        if self.is_io_error() {
            return Some(FailureKind::Io);
        }
        None
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
    Sentinel(std::sync::Arc<crate::sentinel::SentinelTarget>),
}

impl fmt::Debug for RedisManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisManager")
            .field("address", &self.address)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

/// Default time to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time to wait for a reply to a command.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

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
        Ok(Self::from_client(
            client,
            &info,
            connect_timeout,
            response_timeout,
        ))
    }

    /// The manager a builder makes for a URL it has already checked.
    pub(crate) fn from_settings(info: ConnectionInfo, settings: &Settings) -> Result<Self, Error> {
        #[cfg(feature = "tls")]
        let client = match &settings.tls_root_certificates {
            Some(pem) => Client::build_with_tls(
                info.clone(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(info.clone()),
        };
        #[cfg(not(feature = "tls"))]
        let client = Client::open(info.clone());
        let client = client.map_err(|e| {
            Error::config(format!("node `{}`", info.addr()), describe_url_error(&e))
        })?;
        Ok(Self::from_client(
            client,
            &info,
            settings.connect_timeout,
            settings.response_timeout,
        ))
    }

    fn from_client(
        client: Client,
        info: &ConnectionInfo,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        RedisManager {
            target: Target::Direct(client),
            config,
            address: info.addr().to_string(),
            db: info.redis_settings().db(),
        }
    }

    /// The manager for a Sentinel-backed shard.
    #[cfg(feature = "sentinel")]
    pub(crate) fn sentinel(
        shard: &crate::sentinel::SentinelShard,
        settings: &Settings,
    ) -> Result<Self, Error> {
        let target =
            crate::sentinel::SentinelTarget::new(shard.client()?, settings.connect_timeout);
        Ok(RedisManager {
            target: Target::Sentinel(std::sync::Arc::new(target)),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(settings.response_timeout)),
            address: shard.label(),
            db: 0,
        })
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
    // `user:@host` parses as no password at all, which would connect
    // without AUTH: most likely an empty variable in a template.
    if userinfo(url).is_some_and(|u| u.ends_with(':')) {
        return Err(bad(
            "the password is empty (`:@`); leave out the `:` for no password".into(),
        ));
    }
    let info = url
        .into_connection_info()
        .map_err(|e| bad(describe_url_error(&e)))?;
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            if host.is_empty() {
                return Err(bad("the host is missing".into()));
            }
            if *port == 0 {
                return Err(bad("port 0 is not a port a server listens on".into()));
            }
        }
        ConnectionAddr::Unix(_) => {}
        _ => {}
    }
    if info.redis_settings().db() < 0 {
        return Err(bad(format!(
            "the database index must not be negative, got {}",
            info.redis_settings().db()
        )));
    }
    Ok(info)
}

fn url_error(url: &str, e: &RedisError) -> Error {
    Error::config(
        format!("node URL `{}`", redact_url(url)),
        describe_url_error(e),
    )
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
                client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await
            }
            #[cfg(feature = "sentinel")]
            Target::Sentinel(sentinel) => sentinel.connect(&self.config).await,
        }
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING").query_async::<()>(conn).await
    }

    fn has_broken(&self, _: &mut Self::Connection) -> bool {
        // Failures are tracked by the pool's own wrapper, which sees every
        // command's result.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_user_and_password() {
        assert_eq!(redact_url("redis://u:p@h:1/2"), "redis://***@h:1/2");
        assert_eq!(redact_url("redis://:secret@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_url("rediss://a:b@c@h:1"), "rediss://***@h:1");
        assert_eq!(redact_url("garbage"), "garbage");
        assert_eq!(redact_url("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
    }

    #[test]
    fn url_errors_name_the_url_without_credentials() {
        for url in [
            "redis://user:hunter2@127.0.0.1:70000",
            "redis://user:hunter2@127.0.0.1:1/notadb",
            "redis://user:hunter2@127.0.0.1:0",
            "http://user:hunter2@127.0.0.1:1",
            "redis://user:hunter2@127.0.0.1:1/-1",
            "redis://user:@127.0.0.1:1",
        ] {
            let err = parse_url(url).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("***@127.0.0.1"), "{text}");
        }
        assert!(parse_url("redis://").is_err());
        assert!(parse_url("").is_err());
        assert!(parse_url("127.0.0.1:6379").is_err());
    }

    #[test]
    fn manager_debug_shows_no_credentials() {
        let m = RedisManager::new("redis://alice:hunter2@127.0.0.1:7001/3").unwrap();
        let text = format!("{m:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("alice"),
            "{text}"
        );
        assert!(text.contains("127.0.0.1:7001"));
        assert_eq!(m.address(), "127.0.0.1:7001");
    }

    #[test]
    fn classification() {
        let refused: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "x").into();
        let reset: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "x").into();
        let timeout: RedisError = std::io::Error::new(std::io::ErrorKind::TimedOut, "x").into();
        let other: RedisError = std::io::Error::other("x").into();
        let reply: RedisError = (ErrorKind::Server(ServerErrorKind::ResponseError), "ERR").into();
        let loading: RedisError = (ErrorKind::Server(ServerErrorKind::BusyLoading), "x").into();
        let auth: RedisError = (ErrorKind::AuthenticationFailed, "x").into();
        let wrongtype: RedisError = (ErrorKind::UnexpectedReturnType, "x").into();
        assert_eq!(refused.failure_kind(), Some(FailureKind::Refused));
        assert_eq!(reset.failure_kind(), Some(FailureKind::Dropped));
        assert_eq!(timeout.failure_kind(), Some(FailureKind::Timeout));
        assert_eq!(other.failure_kind(), Some(FailureKind::Io));
        assert_eq!(loading.failure_kind(), Some(FailureKind::Loading));
        assert_eq!(auth.failure_kind(), Some(FailureKind::Auth));
        assert_eq!(reply.failure_kind(), None);
        assert_eq!(wrongtype.failure_kind(), None);
    }
}
