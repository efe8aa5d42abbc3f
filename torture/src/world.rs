//! The world a run starts and stops: `redis-server` nodes on free loopback
//! ports, and a fault proxy between every pool process and every node.

use std::net::TcpListener as StdListener;

use fluster::redis;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A free loopback port (the OS picks it; nothing listens on it after).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The server binary: `FLUSTER_REDIS_SERVER`, or `redis-server` on the `PATH`.
pub fn server_binary() -> String {
    std::env::var("FLUSTER_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// One `redis-server` on a loopback port of its own, killed when dropped.
pub struct Node {
    /// Its name in every pool.
    pub name: String,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Arguments added to every start (`--replicaof` for a replica).
    args: Vec<String>,
}

impl Node {
    /// Starts a node named `name` in `dir`, and waits until it answers.
    pub fn start(name: &str, dir: &Path) -> Node {
        Node::start_with(name, dir, &[])
    }

    /// [`start`](Self::start), with `args` added to every start.
    pub fn start_with(name: &str, dir: &Path, args: &[String]) -> Node {
        let mut node = Node {
            name: name.to_owned(),
            port: free_port(),
            dir: dir.join(name),
            child: None,
            args: args.to_vec(),
        };
        std::fs::create_dir_all(&node.dir).unwrap();
        node.restart();
        node
    }

    /// From its next start on, adds `args` (in place of the last ones).
    pub fn set_args(&mut self, args: &[String]) {
        self.args = args.to_vec();
    }

    /// The node's URL, straight (not through a proxy).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Starts it again, empty, on the same port (after a kill), and waits
    /// until it answers `PING`.
    pub fn restart(&mut self) {
        let child = Command::new(server_binary())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--enable-debug-command", "yes", "--loglevel", "warning"])
            .args(["--protected-mode", "no", "--maxclients", "2000"])
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .die_with_parent()
            .spawn()
            .expect("redis-server could not be started: is it on the PATH?");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.answers() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("node {} did not start on port {}", self.name, self.port);
    }

    fn answers(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else { return false };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
        redis::cmd("PING").query::<String>(&mut conn).is_ok()
    }

    /// `kill -9`: it is gone, with its data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGCONT first: a stopped process dies only once continued.
            signal(child.id() as i32, libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `SIGSTOP` (`stop`) or `SIGCONT`.
    pub fn pause(&self, stop: bool) {
        if let Some(pid) = self.pid() {
            signal(pid, if stop { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child that the kernel kills when the harness dies, however it dies:
/// a run leaves no process behind.
pub trait DieWithParent {
    /// Asks for `SIGKILL` at the parent's death.
    fn die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for Command {
    fn die_with_parent(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            self.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        }
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid this harness started; no memory involved.
    unsafe { libc::kill(pid, sig) };
}

/// What a proxy does to the bytes it carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Way {
    /// Forwards them at once.
    #[default]
    Open,
    /// Holds them (sockets kept open, nothing refused): a partition.
    Cut,
    /// Forwards each chunk this many milliseconds late: a slow network.
    Slow(u64),
}

/// A fault proxy: a loopback port that forwards to a node as its [`Way`]
/// says.
pub struct Proxy {
    /// Where pools connect.
    pub port: u16,
    way: watch::Sender<Way>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:target`, open.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (way, watch) = watch::channel(Way::Open);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return; // the node is down: the client sees its socket close
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        () = pump(cr, sw, watch.clone()) => {}
                        () = pump(sr, cw, watch) => {}
                    }
                });
            }
        });
        Proxy { port, way, task }
    }

    /// Cuts (`true`) or heals (`false`) every connection through it.
    pub fn set_cut(&self, cut: bool) {
        self.set(if cut { Way::Cut } else { Way::Open });
    }

    /// Sets what it does to every connection through it.
    pub fn set(&self, way: Way) {
        let _ = self.way.send(way);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes from `from` to `to`, holding them while the proxy is cut
/// and delaying them while it is slow.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut way: watch::Receiver<Way>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if way.wait_for(|w| *w != Way::Cut).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Ok(now) = way.wait_for(|w| *w != Way::Cut).await.map(|w| *w) else { return };
        if let Way::Slow(ms) = now {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
