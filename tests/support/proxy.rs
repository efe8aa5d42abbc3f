//! A fault-injecting TCP proxy in front of a real server, for faults a
//! server cannot show by itself:
//! - `silence()`: a partition that keeps every socket open; bytes go
//!   nowhere, new connections are accepted and never answered.
//! - `refuse()`: a partition from one client's side only (the server
//!   stays up for the others): every socket through it is closed, and new
//!   ones at once.
//! - `hold(bytes, delay)`: a write whose bytes are slow on the way, e.g.
//!   to deliver a stand-in's write after its home has returned.
//! - a server restarted behind it: the client's socket stays open and the
//!   proxy dials the server again for the next bytes, as a TCP load
//!   balancer does, so the client meets the new server on an old socket.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A proxy on a free loopback port to `127.0.0.1:upstream`; stops
/// accepting when dropped.
pub struct Proxy {
    port: u16,
    state: Arc<State>,
}

struct State {
    upstream: u16,
    silent: AtomicBool,
    stopped: AtomicBool,
    refusing: AtomicBool,
    /// The client sockets, to close them all at once.
    clients: Mutex<Vec<TcpStream>>,
    /// Bytes whose chunk is held on its way to the server, and how long.
    held: Mutex<Option<(Vec<u8>, Duration)>>,
    /// Chunks held so far.
    holding: std::sync::atomic::AtomicUsize,
}

impl Proxy {
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            upstream,
            silent: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            clients: Mutex::new(Vec::new()),
            held: Mutex::new(None),
            holding: std::sync::atomic::AtomicUsize::new(0),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stopped.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                if shared.refusing.load(Ordering::Acquire) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                if let Ok(clone) = client.try_clone() {
                    shared.clients.lock().unwrap().push(clone);
                }
                let state = shared.clone();
                std::thread::spawn(move || forward(client, state));
            }
        });
        Proxy { port, state }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// From now on nothing passes either way; sockets stay open.
    pub fn silence(&self) {
        self.state.silent.store(true, Ordering::Release);
    }

    /// Lets bytes pass again, on new sockets and old ones, and takes new
    /// connections again.
    #[allow(dead_code)]
    pub fn restore(&self) {
        self.state.silent.store(false, Ordering::Release);
        self.state.refusing.store(false, Ordering::Release);
    }

    /// From now on every socket through it is closed at once, open ones
    /// included, until [`restore`](Self::restore).
    #[allow(dead_code)]
    pub fn refuse(&self) {
        self.state.refusing.store(true, Ordering::Release);
        for client in self.state.clients.lock().unwrap().drain(..) {
            let _ = client.shutdown(Shutdown::Both);
        }
    }

    /// From now on a chunk of a client's bytes that holds `bytes` reaches
    /// the server `delay` late (the socket's later bytes wait behind it).
    #[allow(dead_code)]
    pub fn hold(&self, bytes: &[u8], delay: Duration) {
        *self.state.held.lock().unwrap() = Some((bytes.to_vec(), delay));
    }

    /// How many chunks [`hold`](Self::hold) has caught so far (counted as
    /// each begins its wait).
    #[allow(dead_code)]
    pub fn held(&self) -> usize {
        self.state.holding.load(Ordering::Acquire)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Release);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Client to server, dialling the server again whenever its last socket
/// has closed; a thread per server socket copies the way back.
fn forward(mut client: TcpStream, state: Arc<State>) {
    let upstream: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if state.silent.load(Ordering::Acquire) || state.stopped.load(Ordering::Acquire) {
            continue;
        }
        let delay = state.held.lock().unwrap().as_ref().and_then(|(bytes, delay)| {
            buf[..n].windows(bytes.len()).any(|w| w == &bytes[..]).then_some(*delay)
        });
        if let Some(delay) = delay {
            state.holding.fetch_add(1, Ordering::AcqRel);
            std::thread::sleep(delay);
        }
        let mut slot = upstream.lock().unwrap();
        if slot.is_none() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", state.upstream)) else {
                break; // nothing listens: the client sees its socket close
            };
            let (back, to) = (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn({
                let (state, upstream) = (state.clone(), upstream.clone());
                move || copy_back(back, to, state, upstream)
            });
            *slot = Some(server);
        }
        if slot.as_mut().unwrap().write_all(&buf[..n]).is_err() {
            *slot = None;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    if let Some(server) = upstream.lock().unwrap().take() {
        let _ = server.shutdown(Shutdown::Both);
    }
}

fn copy_back(
    mut server: TcpStream,
    mut client: TcpStream,
    state: Arc<State>,
    upstream: Arc<Mutex<Option<TcpStream>>>,
) {
    let mut buf = [0u8; 16 * 1024];
    let me = server.local_addr().ok();
    while let Ok(n) = server.read(&mut buf) {
        if n == 0 {
            break;
        }
        if !state.silent.load(Ordering::Acquire) && client.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // This server socket is gone: the next bytes dial the server again.
    let mut slot = upstream.lock().unwrap();
    if slot.as_ref().and_then(|s| s.local_addr().ok()) == me {
        *slot = None;
    }
}
