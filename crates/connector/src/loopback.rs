//! A server on 127.0.0.1 for connectors' test fixtures, which a test can kill and bring back
//! on the same port.
//!
//! It runs on a thread of its own with a runtime of its own, so it answers whatever runtime a
//! test uses (a `#[tokio::test]` runs on one thread) and keeps answering while the test
//! awaits or blocks. Stopping ends that runtime, which closes every connection at once, answered
//! or not, like a server that is killed.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

/// What serves a listener: typically `axum::serve` of the fixture's router, until it ends.
pub type Serve =
    Arc<dyn Fn(tokio::net::TcpListener) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A running server: how to stop it and the thread to wait for.
struct Running {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// A server on 127.0.0.1 that can be stopped and started again on the same port. Dropping it
/// stops it.
pub struct LoopbackServer {
    name: String,
    addr: SocketAddr,
    serve: Serve,
    running: Mutex<Option<Running>>,
}

impl LoopbackServer {
    /// A listener on an ephemeral port of 127.0.0.1, for `start` (its address is known before
    /// the fixture's state is made).
    ///
    /// # Panics
    ///
    /// When no port can be had.
    pub fn listener() -> TcpListener {
        TcpListener::bind(("127.0.0.1", 0)).expect("a port on 127.0.0.1")
    }

    /// Serves `listener` with `serve` on a thread named `name`.
    ///
    /// # Panics
    ///
    /// When the listener has no address or no thread can be started.
    pub fn start(name: &str, listener: TcpListener, serve: Serve) -> Self {
        let addr = listener.local_addr().expect("the address of a fixture's listener");
        let server = Self { name: name.to_string(), addr, serve, running: Mutex::new(None) };
        *server.running() = Some(server.launch(listener));
        server
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server as if it were killed: the port refuses connections and every open
    /// connection is closed. Does nothing when it is stopped already.
    pub fn stop(&self) {
        let running = self.running().take();
        if let Some(running) = running {
            // The thread may have ended already, having lost its listener.
            let _ = running.stop.send(());
            let _ = running.thread.join();
        }
    }

    /// Listens on the same port again. Does nothing when it is running.
    ///
    /// # Panics
    ///
    /// When the port stays taken by something else.
    pub fn restart(&self) {
        let mut running = self.running();
        if running.is_some() {
            return;
        }
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(listener) => break listener,
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error) => panic!("{} cannot listen on {} again: {error}", self.name, self.addr),
            }
        };
        *running = Some(self.launch(listener));
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves `listener` on a new thread until told to stop.
    fn launch(&self, listener: TcpListener) -> Running {
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = Arc::clone(&self.serve);
        let thread = std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for a fixture server");
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                    tokio::select! {
                        () = serve(listener) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection's task, which closes its socket.
                drop(runtime);
            })
            .expect("a thread for a fixture server");
        Running { stop, thread }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The requests a fixture server received, in the order they arrived. Each has a serial
/// number that stays valid when the journal is cleared, so that a request still being answered
/// finds its entry (or finds it gone) by that number.
#[derive(Debug)]
pub struct RequestJournal<T> {
    /// The serial number of `entries[0]`.
    start: usize,
    entries: Vec<T>,
}

impl<T> Default for RequestJournal<T> {
    fn default() -> Self {
        Self { start: 0, entries: Vec::new() }
    }
}

impl<T> RequestJournal<T> {
    /// Notes a request that just arrived; returns its serial number.
    pub fn arrive(&mut self, entry: T) -> usize {
        self.entries.push(entry);
        self.start + self.entries.len() - 1
    }

    /// The entry of the request with serial number `serial`, unless it was cleared since.
    pub fn get_mut(&mut self, serial: usize) -> Option<&mut T> {
        let index = serial.checked_sub(self.start)?;
        self.entries.get_mut(index)
    }

    /// The requests received since the start or the last [`RequestJournal::clear`].
    pub fn entries(&self) -> &[T] {
        &self.entries
    }

    /// Forgets the requests received so far; later ones keep counting on.
    pub fn clear(&mut self) {
        self.start += self.entries.len();
        self.entries.clear();
    }
}
