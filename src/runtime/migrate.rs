//! How one node's server moves keys to another's: the one builder of
//! `MIGRATE host port "" db timeout REPLACE [AUTH …|AUTH2 …] KEYS …` and
//! the one reading of its reply. A move, not a copy: the source blocks
//! until the target has acknowledged its `RESTORE`s, then deletes its own
//! copies, so nothing runs on the source in between.
//!
//! Used by a drain's batches (`drain.rs`) and by a write of a moved key,
//! whose old home moves it to the key's new home before the write is sent
//! (`warm.rs`, `drained.rs`): every write, blind or read-modify-write,
//! starts from the old home's value.

use std::time::Duration;

use redis::{ConnectionInfo, ErrorKind, Pipeline, RedisError, Value};

use crate::settings::url::address;

/// How another node's server reaches a node (`host:port`, the database
/// it selects, the user name and password `MIGRATE` passes on): what a
/// drain asks of each node's manager, and `add_node` of the node it adds.
/// No `Debug`: it holds credentials.
pub(crate) struct Endpoint {
    pub(crate) address: String,
    pub(crate) db: i64,
    pub(crate) auth: Option<(Option<String>, String)>,
}

impl Endpoint {
    /// How another server reaches the one `info` names: its address, and
    /// the database and credentials a connection to it uses (`AUTH
    /// password`, or `AUTH2 user password` with a user name; none without
    /// a password, as the connections send no `AUTH` then).
    pub(crate) fn of(info: &ConnectionInfo) -> Self {
        let settings = info.redis_settings();
        let auth = settings
            .password()
            .map(|password| (settings.username().map(str::to_owned), password.to_owned()));
        Endpoint { address: address(info), db: settings.db(), auth }
    }
}

/// Where a node's server listens, as `MIGRATE` wants it. No `Debug`: it
/// holds the credentials.
pub(crate) struct Address {
    host: String,
    port: u16,
    db: i64,
    auth: Option<(Option<String>, String)>,
}

impl Address {
    /// `endpoint`'s, or why its address is not `host:port` (a socket
    /// path).
    pub(crate) fn parse(endpoint: Endpoint) -> Result<Self, String> {
        let Endpoint { address, db, auth } = endpoint;
        let parsed = address.rsplit_once(':').and_then(|(host, port)| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((host.to_owned(), port.parse().ok()?))
        });
        let (host, port) =
            parsed.ok_or_else(|| format!("its address `{address}` is not host:port"))?;
        Ok(Address { host, port, db, auth })
    }

    /// Adds to `pipe` the `MIGRATE … REPLACE KEYS` of `keys` to here, the
    /// server-to-server step bounded by `timeout_ms`. `REPLACE`: what the
    /// target holds under those names is older than the source's (each
    /// caller says why). Credentials go to the server only, never into an
    /// error.
    pub(crate) fn migrate<K: AsRef<[u8]>>(&self, pipe: &mut Pipeline, timeout_ms: u64, keys: &[K]) {
        let cmd = pipe.cmd("MIGRATE").arg(&self.host).arg(self.port).arg("").arg(self.db);
        cmd.arg(timeout_ms).arg("REPLACE");
        let cmd = match &self.auth {
            Some((Some(user), password)) => cmd.arg("AUTH2").arg(user).arg(password),
            Some((None, password)) => cmd.arg("AUTH").arg(password),
            None => cmd,
        };
        cmd.arg("KEYS");
        for key in keys {
            cmd.arg(key.as_ref());
        }
    }
}

/// The bound of a `MIGRATE`'s server-to-server step: half the pool's
/// `response_timeout`, so the source's own answer (`IOERR`) comes before
/// the pool gives up on the command.
pub(crate) fn timeout_ms(response_timeout: Duration) -> u64 {
    (response_timeout.as_millis() as u64 / 2).max(1)
}

/// The error of a write not sent because its key's old copy could not be
/// moved first (a drain's, or a resize window's): `detail` says which
/// copy, and why the write waits.
pub(crate) fn refused(what: &'static str, detail: String) -> RedisError {
    RedisError::from((ErrorKind::Client, what, detail))
}

/// What a `MIGRATE`'s reply says of its keys: the one reading of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Moved (`OK`), or the source held none of them (`NOKEY`).
    Done,
    /// Refused by a server, in its words (`WRONGPASS`, `OOM` …): nothing
    /// of it is left to run.
    Failed(String),
    /// No reply, or the source gave up on its target (`IOERR`): it may
    /// still run (a stalled server runs what it had queued) or land late
    /// (a `RESTORE` on its way). Its keys are in doubt
    /// ([`Doubts`](crate::runtime::copies::Doubts)).
    InDoubt(String),
}

/// What `reply`, a `MIGRATE`'s (`None`: none came), says.
pub(crate) fn outcome(reply: Option<&Value>) -> Outcome {
    match reply {
        Some(Value::Okay | Value::SimpleString(_)) => Outcome::Done,
        Some(Value::ServerError(e)) => {
            let words = format!("MIGRATE failed: {} {}", e.code(), e.details().unwrap_or(""));
            match e.code() {
                "IOERR" => Outcome::InDoubt(words),
                _ => Outcome::Failed(words),
            }
        }
        None => Outcome::InDoubt("MIGRATE got no reply".into()),
        Some(other) => Outcome::Failed(format!("MIGRATE answered {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(address: &str, auth: Option<(Option<String>, String)>) -> Endpoint {
        Endpoint { address: address.into(), db: 3, auth }
    }

    fn words(pipe: &Pipeline) -> Vec<String> {
        let cmd = pipe.cmd_iter().next().unwrap();
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "<cursor>".into(),
            })
            .collect()
    }

    #[test]
    fn one_migrate_with_its_database_credentials_and_keys() {
        let at = Address::parse(endpoint("[::1]:7001", Some((Some("u".into()), "p".into()))));
        let mut pipe = redis::pipe();
        at.unwrap().migrate(&mut pipe, 50, &[b"k1".as_slice(), b"k2"]);
        let expected = ["MIGRATE", "::1", "7001", "", "3", "50", "REPLACE", "AUTH2", "u", "p"];
        let mut expected: Vec<String> = expected.iter().map(|w| w.to_string()).collect();
        expected.extend(["KEYS", "k1", "k2"].map(String::from));
        assert_eq!(words(&pipe), expected);
        let at = Address::parse(endpoint("127.0.0.1:7002", Some((None, "p".into())))).unwrap();
        let mut pipe = redis::pipe();
        at.migrate(&mut pipe, 50, &[b"k".to_vec()]);
        assert_eq!(words(&pipe)[7..], ["AUTH", "p", "KEYS", "k"].map(String::from));
        let refused = Address::parse(endpoint("/tmp/redis.sock", None)).err().unwrap();
        assert!(refused.contains("not host:port"), "{refused}");
        assert!(Address::parse(endpoint("mymaster", None)).is_err(), "a bare name");
    }

    #[test]
    fn nokey_is_done_ioerr_or_silence_in_doubt_and_an_error_is_told() {
        assert_eq!(outcome(Some(&Value::Okay)), Outcome::Done);
        assert_eq!(outcome(Some(&Value::SimpleString("NOKEY".into()))), Outcome::Done);
        assert!(matches!(outcome(Some(&Value::Int(1))), Outcome::Failed(_)));
        assert!(matches!(outcome(None), Outcome::InDoubt(_)));
        let error = |reply: &str| redis::parse_redis_value(reply.as_bytes()).unwrap();
        let ioerr = error("-IOERR error or timeout reading to target instance\r\n");
        assert!(matches!(outcome(Some(&ioerr)), Outcome::InDoubt(_)));
        let refused = error("-WRONGPASS invalid username-password pair\r\n");
        assert!(matches!(outcome(Some(&refused)), Outcome::Failed(w) if w.contains("WRONGPASS")));
    }
}
