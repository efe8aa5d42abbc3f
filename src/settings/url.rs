//! Node URLs: the one parse and check, the name a URL gives its node, and
//! the redaction that keeps credentials out of every message.

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError};

use crate::error::Error;

/// Parses and checks a node URL. Errors name the URL with its credentials
/// masked.
pub(crate) fn parse_url(url: &str) -> Result<ConnectionInfo, Error> {
    // A list split on commas (`FLUSTER__NODES="a, b"`) leaves spaces.
    let url = url.trim();
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
    if host_port.matches(':').count() > 1 && !host_port.starts_with('[') {
        // `127.0.0.1:7304:99` or `cache:6379:1` is a port too many; an
        // address of hex digits and colons is IPv6 without its brackets.
        let (host, rest) = host_port.split_once(':').unwrap_or_default();
        if host.contains('.') || host.chars().any(|c| !c.is_ascii_hexdigit()) {
            let (port, stray) = rest.split_once(':').unwrap_or_default();
            return Err(bad(format!(
                "`:{stray}` follows the port `{port}`: a node URL has one port \
                 (`{scheme}://{host}:{port}`); the database goes after a slash (`/1`)"
            )));
        }
        return Err(bad(format!(
            "an IPv6 address goes in brackets: `{scheme}://[{host_port}]`, or `[::1]:6379` with a port"
        )));
    }
    if scheme == "rediss" && url.split_once('#').is_some_and(|(_, f)| f.contains("insecure")) {
        return Err(bad("`#insecure` (no certificate checks) is not offered: trust the \
            server's CA with `tls_root_certificates` instead"
            .into()));
    }
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

pub(crate) fn url_error(url: &str, e: &RedisError) -> Error {
    Error::config(format!("node URL `{}`", redact_url(url)), describe_url_error(e))
}

/// The `redis` crate's words for a URL problem, which never include the URL.
pub(crate) fn describe_url_error(e: &RedisError) -> String {
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
