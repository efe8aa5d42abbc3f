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
    if url.is_empty() {
        return Err(bad(format!("it is empty: {SHAPE}")));
    }
    let parts = parts(url);
    let Some(scheme) = parts.scheme else {
        return Err(bad(format!("it has no scheme: {SHAPE}")));
    };
    match scheme {
        "redis" | "redis+unix" | "unix" => {}
        "rediss" if cfg!(feature = "tls") => {}
        "rediss" => return Err(bad("`rediss://` needs fluster's `tls` feature".into())),
        other if other.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) => {
            return Err(bad(format!("`{other}://` is not a Redis scheme: {SHAPE}")));
        }
        _ => return Err(bad(format!("its scheme is not a Redis scheme: {SHAPE}"))),
    }
    if let Some(userinfo) = parts.userinfo.filter(|_| !SOCKET_SCHEMES.contains(&scheme)) {
        // A URL's user-info ends at the first of these, so the rest of the
        // password would be read as the host, the database or a fragment.
        if userinfo.contains(['/', '?', '#']) {
            return Err(bad("the user name or password holds a `/`, `?` or `#`, which end \
                 them in a URL: write each as `%2F`, `%3F` or `%23`"
                .into()));
        }
        // `user:@host` parses as no password at all, which would connect
        // without AUTH: most likely an empty variable in a template.
        if userinfo.ends_with(':') {
            return Err(bad(
                "the password is empty (`:@`); leave out the `:` for no password".into()
            ));
        }
    }
    let host_port = parts.authority;
    // Only an address is quoted back: what is not one may be a password
    // that lost its `@`.
    let address = shows_address(host_port);
    if host_port.matches(':').count() > 1 && !host_port.starts_with('[') {
        // `127.0.0.1:7304:99` or `cache:6379:1` is a port too many; an
        // address of hex digits and colons is IPv6 without its brackets.
        let (host, rest) = host_port.split_once(':').unwrap_or_default();
        if !address {
            return Err(bad("the address has more than one `:`: a node URL has one port, \
                 the database goes after a slash (`/1`), and an IPv6 address in brackets"
                .into()));
        }
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
    if scheme == "rediss" && parts.fragment.is_some_and(|f| f.contains("insecure")) {
        return Err(bad("`#insecure` (no certificate checks) is not offered: trust the \
            server's CA with `tls_root_certificates` instead"
            .into()));
    }
    // `redis` ignores a fragment and any parameter it does not read; here
    // they are most often the rest of a password whose `#`, `?` or `&`
    // was not escaped, or a password in a place it is never read from.
    if parts.fragment.is_some() {
        return Err(bad("a `#` has no place in a node URL (a password that holds one \
             writes it `%23`)"
            .into()));
    }
    let read = query_keys(SOCKET_SCHEMES.contains(&scheme));
    let known = |pair: &str| pair.split_once('=').is_some_and(|(key, _)| read.contains(&key));
    if !parts.query.unwrap_or_default().split('&').filter(|p| !p.is_empty()).all(known) {
        let read = read.iter().map(|key| format!("`{key}`")).collect::<Vec<_>>().join(", ");
        return Err(bad(format!(
            "its query holds something other than {read}, the parameters read from it \
             (values, and a password's `?`, `#` or `&`, are written with `%` escapes)"
        )));
    }
    if let Some((_, port)) = host_port.rsplit_once(':').filter(|(host, _)| !host.ends_with(':'))
        && !port.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(bad(match address {
            true => format!("`{port}` is not a TCP port (1 to 65535)"),
            false => "what follows the host's `:` is not a TCP port (1 to 65535)".into(),
        }));
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

/// Schemes whose credentials travel in the query (`?user=..&pass=..`), not
/// before an `@`.
const SOCKET_SCHEMES: [&str; 3] = ["redis+unix", "unix", "valkey+unix"];

/// A URL cut where a Redis URL's credentials may end, read for what each
/// part may hold rather than as a well-formed URL would be: the text before
/// the LAST `@` of the address is user-info (a password may hold `/`, `?`,
/// `#` and `@`); for a socket (`redis+unix://`), whose credentials are in
/// the query, the query runs from its first `?` to the end (a password
/// there may hold `#`, `&` or `?`).
struct Parts<'a> {
    scheme: Option<&'a str>,
    userinfo: Option<&'a str>,
    /// `host[:port]`, or empty for a socket.
    authority: &'a str,
    /// From its `/`, or empty.
    path: &'a str,
    /// After its `?`.
    query: Option<&'a str>,
    /// After its `#`.
    fragment: Option<&'a str>,
}

fn parts(url: &str) -> Parts<'_> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let socket = scheme.is_some_and(|s| SOCKET_SCHEMES.contains(&s));
    // A socket's query holds its credentials, `@` and all: look for
    // user-info only before it.
    let head = if socket { rest.split('?').next().unwrap_or_default() } else { rest };
    let (userinfo, tail) = match head.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let authority_end = tail.find(['/', '?', '#']).unwrap_or(tail.len());
    let (authority, tail) = tail.split_at(authority_end);
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let (path, tail) = tail.split_at(path_end);
    let (query, fragment) = match tail.strip_prefix('?') {
        Some(query) if socket => (Some(query), None),
        Some(query) => match query.split_once('#') {
            Some((query, fragment)) => (Some(query), Some(fragment)),
            None => (Some(query), None),
        },
        None => (None, tail.strip_prefix('#')),
    };
    Parts { scheme, userinfo, authority, path, query, fragment }
}

/// Whether `authority` is only an address, safe to show: a host name or
/// IPv4 address (or an IPv6 one, in brackets or not), then ports of digits
/// (one too many is a mistake worth showing). Anything else may be a
/// password written without its `@`.
fn shows_address(authority: &str) -> bool {
    let hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    let (host, ports) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, ports)) if hex(v6) => ("", ports),
            _ => return false,
        },
        None if hex(authority) => return true,
        None => authority.split_at(authority.find(':').unwrap_or(authority.len())),
    };
    host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && (ports.is_empty()
            || ports.starts_with(':')
                && ports[1..].split(':').all(|p| p.chars().all(|c| c.is_ascii_digit())))
}

/// Whether `text`, a URL past its scheme that is not a node URL's shape,
/// has no place a credential could be in: no `@` (so no user-info), and
/// nothing but what host names, IP addresses (IPv6 in brackets) and paths
/// are made of, each `:` outside brackets followed by a port (digits) and
/// at most a database (`/` and digits). Any other `:` may start a password
/// that lost its `@`; a `?`, `#` or `%` may be part of one.
fn holds_no_password(text: &str) -> bool {
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    let mut in_brackets = false;
    for (at, c) in text.char_indices() {
        match c {
            '[' if !in_brackets => in_brackets = true,
            ']' if in_brackets => in_brackets = false,
            ':' | '.' if in_brackets => {}
            _ if in_brackets => {
                if !c.is_ascii_hexdigit() {
                    return false;
                }
            }
            ':' => {
                let (port, db) = text[at + 1..].split_once('/').unwrap_or((&text[at + 1..], ""));
                if port.is_empty() || !digits(port) || !digits(db) {
                    return false;
                }
            }
            _ if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/') => {}
            _ => return false,
        }
    }
    !in_brackets
}

/// `url` as messages show it: the scheme, the address and what else holds
/// no secret (a database number, a socket's path, `db` and `protocol` in
/// the query, `#insecure`); any user name, password or other query value
/// is `***`, and so is any part that might hold one.
pub(crate) fn redact_url(url: &str) -> String {
    let Parts { scheme, userinfo, authority, path, query, fragment } = parts(url);
    let socket = scheme.is_some_and(|s| SOCKET_SCHEMES.contains(&s));
    let mut shown = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        let plain =
            scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        shown += if plain { scheme } else { "***" };
        shown += "://";
    }
    // Past the last `@` of an address nothing is a password's; without
    // one, a path that is no database number may be the rest of one.
    let path_shown = if socket {
        path.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_' | '~'))
    } else {
        userinfo.is_some()
            || path.strip_prefix('/').unwrap_or(path).chars().all(|c| c.is_ascii_digit())
    };
    let fragment_shown = fragment.is_none_or(|f| f == "insecure");
    // Each parameter `redis` reads, a credential's value masked; anything
    // else may be the rest of a password.
    let read = query_keys(socket);
    let pairs: Option<Vec<String>> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some(("db", n)) if n.chars().all(|c| c.is_ascii_digit()) => Some(pair.to_owned()),
            Some(("protocol", "2" | "3" | "resp2" | "resp3")) => Some(pair.to_owned()),
            Some((key, _)) if read.contains(&key) => Some(format!("{key}=***")),
            _ => None,
        })
        .collect();
    let shape = shows_address(authority) && path_shown && fragment_shown && pairs.is_some();
    // An `@` past a `/`, `?` or `#` may be inside a password in a query.
    let credentials_end = userinfo.is_some_and(|u| !u.contains(['/', '?', '#']));
    let rest = &url[url.find("://").map_or(0, |at| at + 3)..];
    if !shape && !socket && holds_no_password(rest) {
        // A typo (`redis//host:port`) with no place a password could be
        // in: shown as typed, so its writer sees it.
        shown += rest;
        return shown;
    }
    if !shape && (socket || !credentials_end) {
        // Not the shape of a node URL, and no `@` surely ends a password:
        // one may have lost its `@` anywhere, so past the scheme only a
        // host that is an IP address (or `localhost`) is shown, never a
        // name that may be a user's.
        let host_end = match authority.strip_prefix('[') {
            Some(v6) => v6.find(']').map_or(0, |end| end + 2),
            None => authority.find(':').unwrap_or(authority.len()),
        };
        let host = &authority[..host_end];
        let ip = host.trim_start_matches('[').trim_end_matches(']');
        if !socket && (ip.parse::<std::net::IpAddr>().is_ok() || host == "localhost") {
            shown += host;
            // Without user-info the address starts right after the scheme.
            let next = &url[url.find("://").map_or(0, |at| at + 3) + host.len()..];
            shown += next.get(..1).filter(|c| [":", "/", "?", "#"].contains(c)).unwrap_or("");
        }
        shown += "***";
        return shown;
    }
    // Past the last `@` of an address nothing is a password's: the address
    // is shown as written, anything else a credential may hide in masked.
    if userinfo.is_some() {
        shown += "***@";
    }
    let printable = authority.chars().all(|c| c.is_ascii_graphic());
    shown += if printable { authority } else { "***" };
    shown += path;
    if query.is_some() {
        shown += "?";
        shown += &pairs.map_or_else(|| "***".to_owned(), |pairs| pairs.join("&"));
    }
    if let Some(fragment) = fragment {
        shown += if fragment == "insecure" { "#insecure" } else { "#***" };
    }
    shown
}

/// The query parameters `redis` reads from a URL: a socket's credentials
/// and database are there.
fn query_keys(socket: bool) -> &'static [&'static str] {
    match socket {
        true => &["db", "user", "pass", "protocol"],
        false => &["protocol"],
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
        // Which `@` ends a password is a guess: past the first `/`, the
        // address after it is shown, never what came before.
        assert_eq!(redact_url("redis://h/0?x=a@b"), "redis://***@b");
        assert_eq!(redact_url("redis://u:pa/ss@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact_url("redis://u:pa#ss@h"), "redis://***@h");
        assert_eq!(redact_url("redis://u:p@h:1/x"), "redis://***@h:1/x");
        assert_eq!(redact_url("redis://u:pa?ss@h"), "redis://***@h");
        assert_eq!(redact_url("rediss://h:6380#insecure"), "rediss://h:6380#insecure");
        assert_eq!(redact_url("redis://[::1]:6379/3"), "redis://[::1]:6379/3");
        assert_eq!(redact_url("redis://127.0.0.1:7304:99"), "redis://127.0.0.1:7304:99");
        // No `@`: a host that is not an address may be a password.
        assert_eq!(redact_url("redis://user:pass"), "redis://***");
        assert_eq!(redact_url("redis://:pa/ss"), "redis://***");
        assert_eq!(redact_url("redis://user/pa:ss"), "redis://***");
        // A socket's credentials are in its query.
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=2&user=u&pass=p@s#s=x"),
            "redis+unix:///run/redis.sock?db=2&user=***&pass=***"
        );
        assert_eq!(redact_url("unix:///run/r.sock?pass=a?b"), "unix:///run/r.sock?pass=***");
        // A parameter `redis` does not read may be the rest of a password.
        assert_eq!(redact_url("unix:///run/r.sock?pass=a&b"), "unix://***");
        assert_eq!(redact_url("redis://host?pass=a"), "redis://***");
        assert_eq!(redact_url("redis://h?protocol=resp3"), "redis://h?protocol=resp3");
        // Not a node URL's shape: after an `@`, only the credentials are
        // masked; without one, only a host that is an IP address is shown.
        assert_eq!(redact_url("redis://u:p@h:70O2"), "redis://***@h:70O2");
        assert_eq!(redact_url("redis://u:p@h:1?pass=x#y"), "redis://***@h:1?***#***");
        assert_eq!(redact_url("redis://127.0.0.1:70O2"), "redis://127.0.0.1:***");
        assert_eq!(redact_url("redis://[::1]:x/y"), "redis://[::1]:***");
        assert_eq!(redact_url("redis://localhost:x/y"), "redis://localhost:***");
        assert_eq!(redact_url("redis://10.0.0.1:pass"), "redis://10.0.0.1:***");
        assert_eq!(redact_url("redis://alice:70O2"), "redis://***");
        assert_eq!(redact_url("redis://u:p\n@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h/0?pass=x@y#z"), "redis://***");
        assert_eq!(redact_url("redis://10.0.0.1/0?pass=x@y#z"), "redis://***");
    }

    #[test]
    fn a_typo_with_no_place_for_a_password_is_shown_as_typed() {
        for typo in [
            "redis//127.0.0.1:7000",
            "redis//cache-b.internal:7000/2",
            "redis:///127.0.0.1:7000",
            "redis://localhost/x",
            "redis//[::1]:7000",
            "127.0.0.1:7000/3",
        ] {
            assert_eq!(redact_url(typo), typo);
        }
        // A `:` that no port explains may start a password that lost its
        // `@`; a `?`, `#` or `%` may be inside one; an `@` ends one.
        for (typo, shown) in [
            ("redis//alice:hunter2", "***"),
            ("redis//:hunter2", "***"),
            ("redis//127.0.0.1:7000/hunter2", "***"),
            ("redis//127.0.0.1:7000:hunter2", "***"),
            ("redis//127.0.0.1:hunter2/0", "***"),
            ("redis//[::1:hunter2]:7000", "***"),
            ("redis//alice:hunter2@127.0.0.1:7000", "***@127.0.0.1:7000"),
            ("redis//alice@127.0.0.1:7000", "***@127.0.0.1:7000"),
            ("redis://127.0.0.1:7000/0/hunt:er2", "redis://127.0.0.1:***"),
            ("redis://127.0.0.1/x?hunter2", "redis://127.0.0.1/***"),
            ("redis://127.0.0.1/hunter%32", "redis://127.0.0.1/***"),
            ("redis:/alice:hunter2", "***"),
        ] {
            assert_eq!(redact_url(typo), shown, "{typo}");
        }
    }
}
