//! Real `redis-server` processes for the tests: each on a free loopback
//! port, without persistence, killed when dropped.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod fake;
pub mod logs;
pub mod process;
pub mod proxy;
pub mod resize;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// One `redis-server` child process on `127.0.0.1:port`.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Listens for TLS only, on `port`.
    tls: bool,
    /// Runs as a sentinel watching these masters (name, port).
    watches: Vec<(String, u16)>,
}

/// Ports held by a `RedisServer` of this process, even while it is killed:
/// it restarts on the same port, so no other server may take it meanwhile.
static PORTS_IN_USE: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

fn free_port() -> u16 {
    // Bind port 0 and let the OS choose; the listener is closed before the
    // server binds, so another process could take it in between: `start`
    // retries on a new port if the server does not come up.
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
        let port = listener.local_addr().unwrap().port();
        let mut held = PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        if !held.contains(&port) {
            held.push(port);
            return port;
        }
    }
}

fn release_port(port: u16) {
    PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != port);
}

/// How to get `redis-server`, for messages.
pub const INSTALL_HINT: &str = "redis-server is not installed. Install it with \
    `sudo apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS), \
    or name another server binary (say a valkey-server) in FLUSTER_REDIS_SERVER.";

/// The server binary the tests start: `FLUSTER_REDIS_SERVER` (a
/// `valkey-server`, another Redis), else `redis-server` on the `PATH`.
/// The torture run reads the same variable.
pub fn server_binary() -> String {
    std::env::var("FLUSTER_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// Whether the server binary can be run.
pub fn redis_server_installed() -> bool {
    Command::new(server_binary()).arg("--version").stdout(Stdio::null()).status().is_ok()
}

fn redis_server_path() -> String {
    assert!(redis_server_installed(), "{INSTALL_HINT}");
    server_binary()
}

/// Whether the server binary was built with TLS, asked once: a build
/// without says so when given a TLS port ("Failed finding TLS support");
/// one with fails on the missing certificate instead.
pub fn tls_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let (missing, port) = ("/nonexistent/fluster-tls-probe.pem", free_port());
        let dir = std::env::temp_dir().join(format!("fluster-tls-probe-{}", std::process::id()));
        let mut child = Command::new(redis_server_path())
            .args(["--port", "0", "--tls-port", &port.to_string(), "--save", ""])
            .args(["--tls-cert-file", missing, "--tls-key-file", missing])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&dir).expect("the probe's log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("run the server binary");
        // It stops at once either way; a server that started is killed.
        let deadline = Instant::now() + READY_TIMEOUT;
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        release_port(port);
        let said = std::fs::read_to_string(&dir).unwrap_or_default().to_lowercase();
        let _ = std::fs::remove_file(&dir);
        !["tls support", "connection type tls", "not supported"].iter().any(|m| said.contains(m))
    })
}

/// For a test that needs a TLS-enabled server: true, with a message
/// saying why, when the server binary has no TLS (the test then skips).
pub fn skip_without_tls(test: &str) -> bool {
    if tls_supported() {
        return false;
    }
    // Past the test harness's capture (which takes `eprintln!` only), so
    // that the skip shows in a passing run too.
    let said = format!("SKIPPED {test}: the server binary `{}` has no TLS\n", server_binary());
    let _ = std::io::stderr().write_all(said.as_bytes());
    true
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line arguments, e.g.
    /// `["--requirepass", "secret"]`.
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_inner(extra_args, false)
    }

    /// Starts a server that speaks only TLS on its port, with the given
    /// certificate, key and CA files, not asking clients for certificates.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path) -> Self {
        Self::start_tls_asking(cert, key, ca, false)
    }

    /// Like [`start_tls`](Self::start_tls); with `ask` true, every client
    /// must show a certificate the CA signed (mutual TLS).
    pub fn start_tls_asking(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
        ask: bool,
    ) -> Self {
        let (cert, key, ca) = (cert.to_string_lossy(), key.to_string_lossy(), ca.to_string_lossy());
        Self::start_inner(
            &[
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                if ask { "yes" } else { "no" },
            ],
            true,
        )
    }

    /// Starts a sentinel watching the given masters (name and port on
    /// 127.0.0.1), with a quorum of 2 and a 1 s down-after time.
    pub fn start_sentinel(masters: &[(&str, u16)]) -> Self {
        let watches: Vec<(String, u16)> =
            masters.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                child: None,
                extra_args: Vec::new(),
                tls: false,
                watches: watches.clone(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start a sentinel on a free port after 5 tries");
    }

    /// This server's working directory, made on first use and removed
    /// when the server is dropped.
    fn dir(&self) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fluster-test-{}-{}", std::process::id(), self.port));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        dir
    }

    /// A sentinel's configuration file, which it rewrites as it learns.
    fn sentinel_config(&self) -> std::path::PathBuf {
        let path = self.dir().join("sentinel.conf");
        let mut text = format!(
            "port {}\nbind 127.0.0.1\nprotected-mode no\ndir {}\nsentinel resolve-hostnames no\n",
            self.port,
            self.dir().display()
        );
        for (name, port) in &self.watches {
            text += &format!(
                "sentinel monitor {name} 127.0.0.1 {port} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n"
            );
        }
        std::fs::write(&path, text).expect("write the sentinel configuration");
        path
    }

    fn start_inner(extra_args: &[&str], tls: bool) -> Self {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                child: None,
                extra_args: extra_args.clone(),
                tls,
                watches: Vec::new(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port after 5 tries");
    }

    /// Spawns the process on `self.port`; true once it answers.
    fn spawn(&mut self) -> bool {
        let mut command = Command::new(redis_server_path());
        if !self.watches.is_empty() {
            command.arg(self.sentinel_config()).arg("--sentinel");
        }
        let port = self.port.to_string();
        let ports = if self.tls {
            ["--port", "0", "--tls-port", &port]
        } else {
            ["--port", &port, "--tls-port", "0"]
        };
        let child = command
            .args(ports)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .args(["--loglevel", "warning"])
            // A directory of its own: a replica's full sync writes an RDB
            // file there, which another server must never load.
            .args(["--dir", &self.dir().to_string_lossy()])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false; // exited: most likely the port was taken
            }
            if self.answers_as_our_child() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    /// Whether the server on our port is the process we started (not some
    /// other server that already held the port): its `process_id` must be
    /// our child's. A TLS server is only checked for listening, and a
    /// server with a password we do not know, for answering.
    fn answers_as_our_child(&self) -> bool {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return false;
        };
        if self.tls || self.extra_args.iter().any(|a| a == "--requirepass") {
            return self.answers_ping();
        }
        let Ok(mut stream) = TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", self.port).parse().unwrap(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"INFO server\r\n").is_err() {
            return false;
        }
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if reply.windows(11).any(|w| w == b"process_id:") && reply.ends_with(b"\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&reply)
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .is_some_and(|p| p.trim() == pid.to_string())
    }

    /// Whether the server answers a raw PING (any reply counts, so a server
    /// with `requirepass` answering `-NOAUTH` is up too). A TLS server only
    /// has to accept the connection.
    pub fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", self.port).parse().unwrap(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        if self.tls {
            return true; // listening is all a plain socket can tell
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(stream.read(&mut buf), Ok(n) if n > 0)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The default node name fluster gives this server.
    pub fn name(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is not running").id()
    }

    /// kill -9, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server keeps its sockets but stops answering.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }

    /// Starts the server again on the same port, empty, with other extra
    /// arguments from now on.
    pub fn restart_with(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    /// Starts the server again on the same port (after `kill`), empty.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "could not restart redis-server on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A plain client to this server, bypassing fluster, for checking what
    /// a node really holds.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .expect("direct connection to test server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server ignores nothing but SIGKILL, which is what
            // `kill` sends; resume anyway so no stopped process lingers.
            signal(child.id(), "-CONT");
        }
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir());
        release_port(self.port);
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill").args([sig, &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

/// A builder with one node per server, named after its address.
pub fn builder_for(servers: &[RedisServer]) -> fluster::Builder {
    servers.iter().fold(fluster::ShardedPool::builder(), |b, s| b.node(&s.url()))
}

/// Clients connected to `server`, not counting the one asking.
pub fn clients(server: &RedisServer) -> usize {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut server.client()).unwrap();
    list.lines().count() - 1
}

/// Keys held by all of `servers` together.
pub fn total_keys(servers: &[RedisServer]) -> usize {
    servers.iter().map(|s| redis::cmd("DBSIZE").query::<usize>(&mut s.client()).unwrap()).sum()
}

/// Starts `n` servers.
pub fn start_servers(n: usize) -> Vec<RedisServer> {
    (0..n).map(|_| RedisServer::start()).collect()
}

/// Polls `condition` every 5 ms until it holds or `timeout` passes; returns
/// whether it held.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`eventually`] for a thread outside any runtime (the sync flavour's
/// tests): the same loop, on a runtime of its own.
pub fn eventually_blocking(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(eventually(timeout, condition))
}

/// What the tests ask of a pool, of either flavour and any manager.
pub trait Pool {
    fn home(&self, key: &str) -> Option<fluster::NodeName>;
    fn nodes(&self) -> Vec<String>;
    fn status(&self) -> Vec<fluster::NodeStatus>;
}

/// The one body of both flavours' `Pool`.
macro_rules! pool {
    () => {
        fn home(&self, key: &str) -> Option<fluster::NodeName> {
            self.home_node_for(key)
        }
        fn nodes(&self) -> Vec<String> {
            self.nodes()
        }
        fn status(&self) -> Vec<fluster::NodeStatus> {
            self.status()
        }
    };
}

impl<M: fluster::NodeManager> Pool for fluster::ShardedPool<M> {
    pool!();
}

#[cfg(feature = "r2d2")]
impl Pool for fluster::sync::ShardedPool {
    pool!();
}

/// The first `n` of the keys `prefix:0`, `prefix:1`, ... whose home is
/// `node`: the one key finder.
pub fn keys_on(pool: &impl Pool, node: &str, prefix: &str, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..1_000_000)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|k| pool.home(k).as_deref() == Some(node))
        .take(n)
        .collect();
    assert_eq!(keys.len(), n, "no {n} keys homed on `{node}`");
    keys
}

/// One key whose home is `node`.
pub fn key_on(pool: &impl Pool, node: &str, prefix: &str) -> String {
    keys_on(pool, node, prefix, 1).remove(0)
}

/// One key per node, with the node's name.
pub fn keys_homed_on(pool: &impl Pool, prefix: &str) -> Vec<(String, String)> {
    pool.nodes()
        .into_iter()
        .map(|name| (key_on(pool, &name, prefix), name))
        .map(|(k, n)| (n, k))
        .collect()
}

/// The status of the node named `name`.
pub fn status_of(pool: &impl Pool, name: &str) -> fluster::NodeStatus {
    pool.status().into_iter().find(|s| s.name == name).expect("no such node")
}

/// A pool over `servers` whose stays in the box last from `stay` to twice
/// that: the pool most tests start from.
pub async fn pool_of(servers: &[RedisServer], stay: Duration) -> fluster::ShardedPool {
    builder_for(servers).penalty_min_wait(stay).penalty_max_wait(stay * 2).build().await.unwrap()
}

/// [`pool_of`] for the sync flavour.
#[cfg(feature = "r2d2")]
pub fn sync_pool_of(servers: &[RedisServer], stay: Duration) -> fluster::sync::ShardedPool {
    let builder = fluster::sync::ShardedPool::builder();
    let builder = servers.iter().fold(builder, |b, s| b.node(&s.url()));
    builder.penalty_min_wait(stay).penalty_max_wait(stay * 2).build().unwrap()
}
