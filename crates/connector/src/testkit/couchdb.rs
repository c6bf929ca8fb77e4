//! A real server of the CouchDB replication API for the tests: pouchdb-server from npm, run by
//! the system's `node` with its databases in memory, on a free port of 127.0.0.1, in a fresh
//! temporary directory (where it keeps its `config.json` and log), and stopped and removed when
//! the test drops it, panics or dies.
//!
//! The package is not installed by the tests: `.ci/run` installs it once into
//! `target/pouchdb-server` (or the directory `FIELDSYNC_POUCHDB_DIR` names), with
//! `npm install pouchdb-server@4.2.0`. When it or `node` is missing, [`CouchServer::start`]
//! returns `None` after a `SKIPPED:` line, or panics when `FIELDSYNC_REQUIRE_ALL` is set
//! ([`super::skip`]).
//!
//! [`CouchServer::request`] is a plain blocking HTTP/1.0 client, enough for a test to make
//! databases, design documents and documents, and to edit them as another application would.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value as Json;

use super::processes::{Processes, serve_on_free_port, tail};

/// The version `.ci/run` installs.
pub const POUCHDB_SERVER_VERSION: &str = "4.2.0";

/// What a test skipped on a machine without the package needs.
const NEEDS: &str = "pouchdb-server (the CouchDB API)";

/// What a machine without the package is told to do.
const INSTALL_HINT: &str = "run .ci/run, or `npm install --no-audit --no-fund pouchdb-server@4.2.0` in \
     target/pouchdb-server or in the directory FIELDSYNC_POUCHDB_DIR names; node and npm come from \
     Debian's nodejs and npm";

/// How long the server's start or one request may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A running pouchdb-server; see the module's documentation. Dropping it kills it and removes
/// its directory.
#[derive(Debug)]
pub struct CouchServer {
    port: u16,
    // Fields drop in order: the processes die before their directory is removed.
    _processes: Processes,
    dir: tempfile::TempDir,
}

/// An answer of [`CouchServer::request`]: its status and its body as JSON (`null` when empty
/// or not JSON).
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Json,
}

impl CouchServer {
    /// Starts a fresh server with no databases, or returns `None` after a `SKIPPED:` line on
    /// stderr when pouchdb-server or node is missing (it panics instead when
    /// `FIELDSYNC_REQUIRE_ALL` is set). Blocks for a second or two while node starts.
    ///
    /// # Panics
    ///
    /// When the program is there but the server does not come up in time, with its log.
    pub fn start() -> Option<CouchServer> {
        let program = super::found_or_skip(find_program(), NEEDS, INSTALL_HINT)?;
        let (dir, root) = super::scratch_dir("pouchdb");
        let mut processes = Processes::start(&root);
        let log = root.join("pouchdb-server.log");
        let command = |port: u16| {
            let mut server = Command::new("node");
            server
                .arg(&program)
                .args(["--in-memory", "--host", "127.0.0.1", "--port", &port.to_string()])
                .current_dir(&root);
            server
        };
        let ready = |port: u16| get_welcome(port);
        let (port, _index) =
            serve_on_free_port(&mut processes, "pouchdb-server", &log, "EADDRINUSE", TIMEOUT, command, ready);
        Some(CouchServer { port, _processes: processes, dir })
    }

    /// The server of this test binary, started by the first test that asks; `None` (each time,
    /// after a `SKIPPED:` line) when it cannot be started. It is never dropped: its processes'
    /// watchdog stops it and removes its directory once the test binary has exited. Tests keep
    /// apart by database.
    pub fn shared() -> Option<&'static CouchServer> {
        static SERVER: std::sync::OnceLock<Option<CouchServer>> = std::sync::OnceLock::new();
        super::shared_server(&SERVER, CouchServer::start, NEEDS, "it could not be started", INSTALL_HINT)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's URL: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends one request (`path` from the server's root, with its query) with `body` as JSON,
    /// and `auth` as HTTP basic auth when given.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached or its answer cannot be read.
    pub fn request_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&Json>,
        auth: Option<(&str, &str)>,
    ) -> Answer {
        request(self.port, method, path, body, auth)
            .unwrap_or_else(|error| panic!("{method} {path} failed: {error}\n{}", self.log_tail()))
    }

    /// [`CouchServer::request_as`] without auth.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached or its answer cannot be read.
    pub fn request(&self, method: &str, path: &str, body: Option<&Json>) -> Answer {
        self.request_as(method, path, body, None)
    }

    /// Makes the database `name`.
    ///
    /// # Panics
    ///
    /// When the server refuses, with its answer.
    pub fn create_database(&self, name: &str) {
        let answer = self.request("PUT", &format!("/{name}"), None);
        assert!(answer.status == 201 || answer.status == 200, "PUT /{name}: {answer:?}");
    }

    /// A proxy in front of the server that runs `hook` once, just before it passes on the first
    /// request whose first bytes hold `marker` (`"/_bulk_docs "`): another application's edit
    /// between a connector's read of the documents and its write. Returns the proxy's URL,
    /// `http://127.0.0.1:PORT`; it forwards until the test binary ends.
    ///
    /// # Panics
    ///
    /// When no port of 127.0.0.1 is free.
    pub fn proxy_running_before(&self, marker: &'static str, hook: impl FnOnce() + Send + 'static) -> String {
        self.proxy(marker, Meddle::Run(Box::new(hook)))
    }

    /// A proxy in front of the server that answers every request whose first bytes hold
    /// `marker` with `answer` (a whole HTTP response, sent as it is, then the connection closed)
    /// instead of passing it on: a server without an endpoint the connector prefers. Returns the
    /// proxy's URL; it forwards everything else until the test binary ends.
    ///
    /// # Panics
    ///
    /// When no port of 127.0.0.1 is free.
    pub fn proxy_answering(&self, marker: &'static str, answer: &'static str) -> String {
        self.proxy(marker, Meddle::Answer(answer))
    }

    fn proxy(&self, marker: &'static str, meddle: Meddle) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let address = listener.local_addr().expect("an address");
        let meddle = Arc::new(Mutex::new(Some(meddle)));
        let port = self.port;
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else { continue };
                let (Ok(mut client_reads), Ok(mut server_answers)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                let (mut to_server, mut to_client) = (server, client);
                let Ok(mut refusing) = to_client.try_clone() else { continue };
                let meddle = Arc::clone(&meddle);
                std::thread::spawn(move || {
                    let mut buffer = vec![0; 64 * 1024];
                    while let Ok(read) = client_reads.read(&mut buffer) {
                        if read == 0 {
                            break;
                        }
                        if String::from_utf8_lossy(&buffer[..read]).contains(marker) {
                            let mut meddle = meddle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                            match meddle.take() {
                                Some(Meddle::Run(hook)) => hook(),
                                Some(Meddle::Answer(answer)) => {
                                    *meddle = Some(Meddle::Answer(answer));
                                    let _ = refusing.write_all(answer.as_bytes());
                                    let _ = refusing.shutdown(std::net::Shutdown::Both);
                                    break;
                                }
                                None => {}
                            }
                        }
                        if to_server.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server_answers, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        format!("http://{address}")
    }

    /// The end of the server's log, for a test's failure message.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("pouchdb-server.log"))
    }
}

/// What a proxy of the server does with the request it watches for.
enum Meddle {
    /// Runs this once, then passes the request on.
    Run(Box<dyn FnOnce() + Send>),
    /// Answers this instead of the server, every time.
    Answer(&'static str),
}

/// Where pouchdb-server's program is: `bin/pouchdb-server` of the package installed in
/// `$FIELDSYNC_POUCHDB_DIR` or in the workspace's `target/pouchdb-server`; or what is missing.
fn find_program() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("FIELDSYNC_POUCHDB_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pouchdb-server"),
    };
    let program = dir.join("node_modules/pouchdb-server/bin/pouchdb-server");
    if !program.is_file() {
        return Err(format!("{} does not exist", program.display()));
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|output| output.status.success()) {
        return Err("node is not on PATH".to_string());
    }
    Ok(program)
}

/// Whether the server at `port` answers its welcome.
fn get_welcome(port: u16) -> bool {
    request(port, "GET", "/", None, None).is_ok_and(|answer| answer.status == 200)
}

/// One HTTP/1.0 request (so that the answer is not chunked and ends with the connection).
fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Json>,
    auth: Option<(&str, &str)>,
) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|error| error.to_string())?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|error| error.to_string())?;
    let body = body.map(Json::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some((user, password)) = auth {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        head.push_str(&format!("Authorization: Basic {credentials}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|error| error.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| format!("no end of the head in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok(Answer { status, body: serde_json::from_str(body).unwrap_or(Json::Null) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_answers_and_is_gone_once_dropped() {
        let Some(server) = CouchServer::start() else { return };
        server.create_database("club");
        let made = server.request("POST", "/club", Some(&serde_json::json!({ "_id": "m1", "name": "Zoë" })));
        assert_eq!(made.status, 201, "{made:?}");
        assert_eq!(server.request("GET", "/club/m1", None).body["name"], "Zoë");
        let (port, dir) = (server.port(), server.dir.path().to_path_buf());
        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "the server stopped");
        assert!(!dir.exists(), "its directory is gone");
    }
}
