//! A tiny fake RESP server for replies a real server cannot be made to give
//! on demand: it answers `PING` with `+PONG`, connection set-up commands
//! with `+OK`, and every other command with one reply, which the test may
//! change (an empty reply: the command is never answered). `COMMAND` is
//! refused, as by a server that renamed it, unless the fake is made
//! [`knowing`](FakeServer::knowing) a table of its own: a test double of a
//! server whose command table the vendored one lacks.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A fake server on a free loopback port; stops when dropped.
pub struct FakeServer {
    port: u16,
    stop: Arc<AtomicBool>,
    reply: Arc<Mutex<&'static str>>,
    /// Every command received, words upper case.
    seen: Seen,
}

type Seen = Arc<Mutex<Vec<Vec<String>>>>;

/// What a fake answers to `COMMAND` unless told otherwise.
const REFUSED: &str = "-ERR unknown command 'COMMAND'\r\n";

impl FakeServer {
    /// Answers every command but `PING`, `CLIENT`, `SELECT` and `HELLO`
    /// with `reply`, a whole RESP line such as `"-LOADING ...\r\n"`.
    pub fn start(reply: &'static str) -> Self {
        Self::knowing(reply, REFUSED)
    }

    /// Like [`start`](Self::start), answering `COMMAND` with `table` (a
    /// whole RESP reply).
    pub fn knowing(reply: &'static str, table: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let reply = Arc::new(Mutex::new(reply));
        let seen = Seen::default();
        let (stopping, replies, seeing) = (stop.clone(), reply.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                if let Ok(stream) = stream {
                    let (reply, seen) = (replies.clone(), seeing.clone());
                    std::thread::spawn(move || serve(stream, reply, table, seen));
                }
            }
        });
        FakeServer { port, stop, reply, seen }
    }

    /// Every command received so far, words upper case.
    pub fn seen(&self) -> Vec<Vec<String>> {
        self.seen.lock().unwrap().clone()
    }

    /// From now on, every command but set-up ones gets `reply`.
    pub fn set_reply(&self, reply: &'static str) {
        *self.reply.lock().unwrap() = reply;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    #[allow(dead_code)]
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn name(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads commands (RESP arrays of bulk strings) and answers each.
fn serve(stream: TcpStream, reply: Arc<Mutex<&'static str>>, table: &'static str, seen: Seen) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let Some(count) = line.trim_end().strip_prefix('*').and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        let mut args = Vec::with_capacity(count);
        for _ in 0..count {
            line.clear();
            reader.read_line(&mut line).unwrap_or(0); // $len
            let mut arg = String::new();
            reader.read_line(&mut arg).unwrap_or(0);
            args.push(arg.trim_end().to_ascii_uppercase());
        }
        let answer = match args.first().map(String::as_str) {
            Some("PING") => "+PONG\r\n",
            Some("CLIENT" | "SELECT" | "HELLO") => "+OK\r\n",
            Some("COMMAND") => table,
            _ => *reply.lock().unwrap(),
        };
        seen.lock().unwrap().push(args);
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
