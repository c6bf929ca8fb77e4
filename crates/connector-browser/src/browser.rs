//! Headless Chromium, started and stopped through Debian's `chromedriver`, with nothing left behind.
//!
//! [`Browser::start`] starts `chromedriver` on a free loopback port, opens a WebDriver session in a
//! fresh profile and hands out the connected [`fantoccini::Client`]. Nothing it starts may outlive
//! fieldsync, even when fieldsync is killed with SIGKILL and no destructor runs:
//!
//! - chromedriver runs under `setpriv --pdeathsig KILL`, so the kernel kills it when its parent dies.
//!   The parent is the *thread* that started it, not the process: a tokio worker or blocking thread
//!   (blocking threads end after ten idle seconds) would take chromedriver with it while fieldsync
//!   runs on. So chromedriver is started by a thread of its own, the keeper, which lives exactly as
//!   long as the [`Browser`] and ends only after chromedriver has been killed.
//! - chromedriver starts Chromium through a wrapper script in the run's directory that runs the real
//!   binary under `setpriv --pdeathsig KILL` too, so Chromium dies with chromedriver. Chromium's
//!   helpers (zygotes, renderers, the GPU and network processes) end when the browser process is gone.
//! - A death signal armed after the parent already died would never fire, so the program that
//!   `setpriv` starts first checks that its parent is still the one that started it, and gives up
//!   otherwise.
//! - chromedriver leads a process group of its own, which Chromium and its helpers join. Closing or
//!   dropping the [`Browser`] kills the whole group. Its own group also keeps a terminal's Ctrl-C,
//!   which goes to the foreground group, from killing the browser under fieldsync's feet.
//! - Chromium's crash handler (`chrome_crashpad_handler`) leaves the group: it forks twice and starts
//!   a session of its own. It ends by itself when the browser process is gone, and it cannot be left
//!   out (with `--disable-crashpad-for-testing`, pages never load). The wrapper points its database
//!   into the run's directory (`BREAKPAD_DUMP_LOCATION`), which keeps it out of the user's home and
//!   names the run in its command line: closing the browser and the sweep kill it by that name.
//! - Every run has a directory of its own, `fieldsync-browser-*` in the temporary directory, holding
//!   the profile, the downloads, the wrapper, chromedriver's log and an `owner` file naming the
//!   process that made it. A start removes the directories of owners that are gone (killed runs),
//!   first killing any process that still uses one.
//!
//! chromedriver is not given `--allowed-ips`: with it, chromedriver listens on every interface
//! (filtering by address), while without it it listens on loopback only.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fantoccini::wd::Capabilities;
use fieldsync_connector::ConnectorError;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The prefix of every run's directory, by which stale ones are found.
const RUN_PREFIX: &str = "fieldsync-browser-";
/// The directory in a run's directory where Chromium's crash handler keeps its database.
const CRASH_DIR: &str = "crashpad";
/// The file in a run's directory naming the process that owns it.
const OWNER_FILE: &str = "owner";
/// A run's directory without an owner file is left alone this long: its start may be under way.
const OWNERLESS_GRACE: Duration = Duration::from_secs(60);
/// Debian's Chromium binary. `/usr/bin/chromium` is a launcher script that adds Debian's default
/// flags, API keys and extensions, none of which a headless run wants, so the binary is run itself.
const DEBIAN_CHROMIUM: &str = "/usr/lib/chromium/chromium";
/// Debian's chromedriver, when there is none on the `PATH`.
const DEBIAN_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// util-linux's `setpriv`, which arms the death signals.
const SETPRIV: &str = "/usr/bin/setpriv";
/// What to install when the programs are missing.
const INSTALL_HINT: &str = "apt-get install chromium chromium-driver";
/// How many ports are tried when chromedriver finds the one it was given taken.
const PORT_ATTEMPTS: usize = 5;
/// How long ending the WebDriver session may take when the browser closes.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the processes of the group may take to end after they were killed.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The switches every Chromium of fieldsync gets, before the profile, the window size and the
/// caller's own.
const CHROMIUM_SWITCHES: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-crash-reporter",
];

/// Switches that fieldsync sets itself and a caller may not.
const OWN_SWITCHES: &[&str] = &["--remote-debugging-port", "--remote-debugging-pipe", "--user-data-dir"];

/// The program `setpriv` starts: it checks that its parent (`$1`) is still alive and still its
/// parent now that the death signal is armed, then becomes the real program.
const PARENT_CHECK: &str = r#"[ "$PPID" = "$1" ] || exit 111; shift; exec "$@""#;

/// How to start a [`Browser`].
#[derive(Clone, Debug)]
pub struct BrowserOptions {
    /// The `chromedriver` program. `None`: `chromedriver` on the `PATH`, else
    /// `/usr/bin/chromedriver`.
    pub chromedriver: Option<PathBuf>,
    /// The Chromium binary itself, not a launcher script. `None`: Debian's
    /// `/usr/lib/chromium/chromium`.
    pub chromium: Option<PathBuf>,
    /// More Chromium switches, after fieldsync's own. The profile and the debugging port are
    /// fieldsync's; switches setting them are refused.
    pub args: Vec<String>,
    /// The window's width and height in pixels: what screenshots show, and which layout pages pick.
    pub window_size: (u32, u32),
    /// How long starting may take, chromedriver and the session together.
    pub start_timeout: Duration,
    /// Where downloads go. `None`: a `downloads` directory in the run's own directory, removed with it.
    pub downloads: Option<PathBuf>,
    /// Where the run's directory is made, and where stale ones are looked for. `None`: the system's
    /// temporary directory. It must allow executables: the Chromium wrapper script lives there.
    pub temp_dir: Option<PathBuf>,
}

impl Default for BrowserOptions {
    fn default() -> BrowserOptions {
        BrowserOptions {
            chromedriver: None,
            chromium: None,
            args: Vec::new(),
            window_size: (1280, 1024),
            start_timeout: Duration::from_secs(30),
            downloads: None,
            temp_dir: None,
        }
    }
}

impl BrowserOptions {
    /// The chromedriver program these options name.
    fn chromedriver_path(&self) -> PathBuf {
        self.chromedriver.clone().unwrap_or_else(|| {
            find_on_path("chromedriver").unwrap_or_else(|| PathBuf::from(DEBIAN_CHROMEDRIVER))
        })
    }

    /// The Chromium binary these options name.
    fn chromium_path(&self) -> PathBuf {
        self.chromium.clone().unwrap_or_else(|| PathBuf::from(DEBIAN_CHROMIUM))
    }

    /// The directory runs' directories go in.
    fn temp_root(&self) -> PathBuf {
        self.temp_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// A headless Chromium with a WebDriver session, the processes running it and the run's directory.
///
/// [`Browser::close`] ends it in order; dropping it does the same without ending the session
/// politely, blocking the thread for the few milliseconds the kill takes. Clones of
/// [`Browser::client`] stop working once the browser is closed or dropped. The client belongs to
/// the tokio runtime the browser was started in.
pub struct Browser {
    /// The session; `None` only while closing.
    client: Option<fantoccini::Client>,
    /// The thread that started chromedriver and kills its group.
    keeper: Keeper,
    /// The run's directory: profile, downloads, wrapper, log, owner file.
    dir: Option<tempfile::TempDir>,
    /// Where downloads go.
    downloads: PathBuf,
    /// The files the downloads directory held before the start, which are no downloads of this run.
    earlier_files: Vec<std::ffi::OsString>,
    /// The Chromium browser process, as chromedriver reported it.
    chromium_pid: Option<u32>,
    /// How long the start took.
    started_in: Duration,
}

// A browser moves between threads: the service's runs are `Send` futures on a
// multi-threaded runtime. Checked when this compiles.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Browser>();
};

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("chromedriver_pid", &self.keeper.pid)
            .field("chromium_pid", &self.chromium_pid)
            .field("dir", &self.dir.as_ref().map(tempfile::TempDir::path))
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Whether the programs a browser needs are installed: chromedriver, Chromium and `setpriv`.
    /// The error says what is missing and what to install, for a test to skip with.
    pub fn available(options: &BrowserOptions) -> Result<(), String> {
        let chromedriver = options.chromedriver_path();
        if !is_executable(&chromedriver) {
            return Err(format!(
                "chromedriver is not installed (no program {}; {INSTALL_HINT})",
                chromedriver.display()
            ));
        }
        let chromium = options.chromium_path();
        if !is_executable(&chromium) {
            return Err(format!(
                "Chromium is not installed (no program {}; {INSTALL_HINT})",
                chromium.display()
            ));
        }
        if !is_executable(Path::new(SETPRIV)) {
            return Err(format!(
                "setpriv is not installed (no program {SETPRIV}; apt-get install util-linux)"
            ));
        }
        Ok(())
    }

    /// Starts chromedriver and a headless Chromium in a fresh profile, and connects to it.
    ///
    /// Stale run directories (of processes that are gone) are removed first. A missing program or
    /// a refused option is [`ConnectorError::Misconfigured`]; a browser that does not start in time
    /// is [`ConnectorError::Unavailable`], with the end of chromedriver's log.
    pub async fn start(options: &BrowserOptions) -> Result<Browser, ConnectorError> {
        let began = Instant::now();
        Browser::available(options).map_err(|message| ConnectorError::Misconfigured { message })?;
        if let Some(own) = options
            .args
            .iter()
            .find(|arg| OWN_SWITCHES.iter().any(|switch| arg.split('=').next() == Some(*switch)))
        {
            return Err(ConnectorError::Misconfigured {
                message: format!("the Chromium switch {own} is fieldsync's own and cannot be given"),
            });
        }
        let root = options.temp_root();
        sweep_stale_runs(&root);

        let unavailable = |message: String| ConnectorError::Unavailable {
            what: "the browser".into(),
            message,
            retry_after: None,
        };
        let dir = make_run_dir(&root)
            .map_err(|error| unavailable(format!("making a run directory in {}: {error}", root.display())))?;
        let downloads = match &options.downloads {
            Some(downloads) => downloads.clone(),
            None => dir.path().join("downloads"),
        };
        let wrapper = dir.path().join("chromium");
        fs::create_dir_all(&downloads)
            .and_then(|()| fs::create_dir(dir.path().join("profile")))
            .and_then(|()| write_wrapper(&wrapper, &options.chromium_path(), &dir.path().join(CRASH_DIR)))
            .map_err(|error| unavailable(format!("preparing {}: {error}", dir.path().display())))?;

        let earlier_files: Vec<std::ffi::OsString> = fs::read_dir(&downloads)
            .map(|entries| entries.flatten().map(|entry| entry.file_name()).collect())
            .unwrap_or_default();

        let deadline = began + options.start_timeout;
        let (keeper, port) = start_chromedriver(options, dir.path(), deadline).await?;
        // The trailing slash matters: command paths are joined to it.
        let base = format!("http://127.0.0.1:{port}/{}/", run_name(dir.path()));
        let capabilities = capabilities(options, dir.path(), &wrapper, &downloads);
        let mut builder =
            fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        let left = deadline.saturating_duration_since(Instant::now());
        let client = match tokio::time::timeout(left, builder.connect(&base)).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                let log = log_tail(dir.path());
                drop(keeper);
                return Err(unavailable(format!("the WebDriver session was not created: {error}{log}")));
            }
            Err(_) => {
                let log = log_tail(dir.path());
                drop(keeper);
                return Err(unavailable(format!(
                    "Chromium did not start within {:?}{log}",
                    options.start_timeout
                )));
            }
        };
        let chromium_pid = client
            .capabilities()
            .and_then(|capabilities| capabilities.get("goog:processID"))
            .and_then(Value::as_u64)
            .and_then(|pid| u32::try_from(pid).ok());
        let browser = Browser {
            client: Some(client),
            keeper,
            dir: Some(dir),
            downloads,
            earlier_files,
            chromium_pid,
            started_in: began.elapsed(),
        };
        tracing::debug!(
            chromedriver = browser.keeper.pid,
            chromium = ?browser.chromium_pid,
            port,
            started_in = ?browser.started_in,
            "browser started"
        );
        Ok(browser)
    }

    /// The WebDriver session.
    pub fn client(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("the client is only taken by close")
    }

    /// Ends the WebDriver session (Chromium quits), kills chromedriver's process group, waits for
    /// it and removes the run's directory. What fails is logged: nothing is left to retry.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            match tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "ending the WebDriver session"),
                Err(_) => tracing::debug!("ending the WebDriver session took too long"),
            }
        }
        if let Some(done) = self.keeper.stop() {
            match tokio::time::timeout(KILL_TIMEOUT * 2, done).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => tracing::warn!("some browser processes did not end after SIGKILL"),
                Ok(Err(_)) | Err(_) => tracing::warn!("the browser's processes were not seen to end"),
            }
        }
        self.keeper.join();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(error) = dir.close() {
                tracing::warn!(%error, dir = %path.display(), "removing the browser's run directory");
            }
        }
    }

    /// chromedriver's process id, which is also the process group of the browser (but for the
    /// crash handler).
    pub fn chromedriver_pid(&self) -> u32 {
        self.keeper.pid
    }

    /// The Chromium browser process's id, as chromedriver reported it.
    pub fn chromium_pid(&self) -> Option<u32> {
        self.chromium_pid
    }

    /// Every live process of the browser: chromedriver first, then every process in its group,
    /// descended from it, or naming the run (the crash handler).
    pub fn pids(&self) -> Vec<u32> {
        browser_processes(self.keeper.pid, &run_name(self.run_dir()))
    }

    /// The total resident memory, in KiB, of chromedriver and every Chromium process under it, the
    /// crash handler included (the sum of their `VmRSS`, so pages they share count more than
    /// once). `None` when chromedriver is gone.
    pub fn memory_kib(&self) -> Option<u64> {
        let pids = browser_processes(self.keeper.pid, &run_name(self.run_dir()));
        if pids.first() != Some(&self.keeper.pid) {
            return None;
        }
        Some(pids.iter().filter_map(|&pid| rss_kib(pid)).sum())
    }

    /// The browser's share of memory, in KiB: like [`Browser::memory_kib`], but each page shared
    /// by several processes counted once, split between them (the sum of their `Pss`). This is what
    /// the browser costs the machine; the sum of resident sizes is three to four times more.
    /// `None` when chromedriver is gone.
    pub fn proportional_memory_kib(&self) -> Option<u64> {
        let pids = browser_processes(self.keeper.pid, &run_name(self.run_dir()));
        if pids.first() != Some(&self.keeper.pid) {
            return None;
        }
        Some(pids.iter().filter_map(|&pid| pss_kib(pid)).sum())
    }

    /// How long [`Browser::start`] took, chromedriver and the session together.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The run's directory (`fieldsync-browser-*`), removed when the browser ends.
    pub fn run_dir(&self) -> &Path {
        self.dir.as_ref().expect("the directory is only taken by close").path()
    }

    /// The profile directory Chromium uses, inside [`Browser::run_dir`].
    pub fn profile_dir(&self) -> PathBuf {
        self.run_dir().join("profile")
    }

    /// Where downloads go.
    pub fn downloads_dir(&self) -> &Path {
        &self.downloads
    }

    /// Waits until the downloads directory holds a finished download and returns the newest one.
    /// Chromium writes a download as `*.crdownload` and renames it when it is complete, so a file
    /// without that ending is whole; files the directory held before the start are not downloads.
    /// The caller removes (or moves) the file after reading it, so that the next wait finds the
    /// next download.
    pub async fn wait_for_download(&self, timeout: Duration) -> Result<PathBuf, ConnectorError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(file) = finished_download(&self.downloads, &self.earlier_files) {
                return Ok(file);
            }
            if Instant::now() >= deadline {
                return Err(ConnectorError::Unavailable {
                    what: self.downloads.display().to_string(),
                    message: format!("no download finished within {timeout:?}"),
                    retry_after: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session is not ended politely: that needs the runtime. Killing the group ends
        // Chromium as surely, and the directory goes after the processes using it.
        drop(self.client.take());
        drop(self.keeper.stop());
        self.keeper.join();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(error) = dir.close() {
                tracing::warn!(%error, dir = %path.display(), "removing the browser's run directory");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// chromedriver and its keeper.

/// The thread that started chromedriver. chromedriver's death signal is tied to this thread, so it
/// runs until the browser ends: then it kills chromedriver's process group, waits for the group to
/// end and reaps chromedriver.
struct Keeper {
    /// chromedriver's process id and process group.
    pid: u32,
    /// Dropping it tells the keeper to kill the group.
    stop: Option<mpsc::Sender<()>>,
    /// Says, once the group was killed and chromedriver reaped, whether every process ended.
    done: Option<tokio::sync::oneshot::Receiver<bool>>,
    /// The thread.
    thread: Option<JoinHandle<()>>,
}

impl Keeper {
    /// Starts `command` from a new keeper thread and returns once it is running.
    fn spawn(command: Command, run_name: String) -> io::Result<Keeper> {
        let (started_sender, started) = mpsc::sync_channel(1);
        let (stop, stop_receiver) = mpsc::channel();
        let (done_sender, done) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new().name("fieldsync-browser".into()).spawn(move || {
            keep(command, &run_name, &started_sender, &stop_receiver, done_sender);
        })?;
        // Spawning takes a millisecond or two; the keeper answers right after.
        match started.recv() {
            Ok(Ok(pid)) => Ok(Keeper { pid, stop: Some(stop), done: Some(done), thread: Some(thread) }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other("the thread starting chromedriver ended"))
            }
        }
    }

    /// Tells the keeper to kill the group; returns what it will say when it is done (once).
    fn stop(&mut self) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        drop(self.stop.take());
        self.done.take()
    }

    /// Waits for the keeper thread to end (stopping it first).
    fn join(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the browser's keeper thread panicked");
        }
    }

    /// Whether chromedriver has exited (it stays a zombie until the keeper reaps it).
    fn exited(&self) -> bool {
        proc_stat(self.pid).is_none_or(|stat| stat.state == 'Z' || stat.state == 'X')
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.join();
    }
}

/// The keeper thread: starts chromedriver, says so, waits to be told to stop, then kills the group
/// and the crash handler, which lives outside it.
fn keep(
    mut command: Command,
    run_name: &str,
    started: &mpsc::SyncSender<io::Result<u32>>,
    stop: &mpsc::Receiver<()>,
    done: tokio::sync::oneshot::Sender<bool>,
) {
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let _ = started.send(Err(error));
            return;
        }
    };
    let pid = child.id();
    let _ = started.send(Ok(pid));
    // Nothing is ever sent: the browser drops the sender to stop. chromedriver is not reaped
    // before the kill, even when it exits early: as a zombie it keeps its process id, so the group
    // id killed below cannot have been given to anyone else's processes.
    let _ = stop.recv();
    kill_group(pid);
    kill_pids(&processes_mentioning(run_name));
    let ended = wait_for_group_end(pid, run_name, KILL_TIMEOUT);
    if let Err(error) = child.wait() {
        tracing::warn!(%error, "waiting for chromedriver");
    }
    let _ = done.send(ended);
}

/// Starts chromedriver on a free loopback port and waits until it answers, trying another port
/// when the one picked was taken meanwhile.
async fn start_chromedriver(
    options: &BrowserOptions,
    dir: &Path,
    deadline: Instant,
) -> Result<(Keeper, u16), ConnectorError> {
    let unavailable = |message: String| ConnectorError::Unavailable {
        what: "chromedriver".into(),
        message,
        retry_after: None,
    };
    let chromedriver = options.chromedriver_path();
    let mut last_error = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port().map_err(|error| unavailable(format!("finding a free port: {error}")))?;
        let log =
            File::create(dir.join("chromedriver.log")).and_then(|log| Ok((log.try_clone()?, log))).map_err(
                |error| unavailable(format!("creating chromedriver's log in {}: {error}", dir.display())),
            )?;
        let mut command = Command::new(SETPRIV);
        command
            .args(["--pdeathsig", "KILL", "--", "/bin/sh", "-c", PARENT_CHECK, "sh"])
            .arg(std::process::id().to_string())
            .arg(&chromedriver)
            .arg(format!("--port={port}"))
            // A path of the run's own: only this chromedriver answers at it, and the sweep finds
            // chromedriver by the run's name in its command line.
            .arg(format!("--url-base=/{}", run_name(dir)))
            .stdin(Stdio::null())
            .stdout(log.0)
            .stderr(log.1)
            .process_group(0);
        let keeper = Keeper::spawn(command, run_name(dir))
            .map_err(|error| unavailable(format!("starting {}: {error}", chromedriver.display())))?;
        match wait_until_ready(&keeper, port, &run_name(dir), deadline).await {
            Ready::Yes => return Ok((keeper, port)),
            Ready::Exited => {
                drop(keeper);
                let log = fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default();
                if log.contains("Address already in use") || log.contains("port not available") {
                    last_error = format!("port {port} was taken");
                    continue;
                }
                return Err(unavailable(format!("chromedriver exited at its start{}", log_tail(dir))));
            }
            Ready::TimedOut => {
                drop(keeper);
                return Err(unavailable(format!(
                    "chromedriver did not answer within {:?}{}",
                    options.start_timeout,
                    log_tail(dir)
                )));
            }
        }
    }
    Err(unavailable(format!("no free port after {PORT_ATTEMPTS} attempts (last: {last_error})")))
}

/// What came of waiting for chromedriver.
enum Ready {
    Yes,
    Exited,
    TimedOut,
}

/// Waits until chromedriver answers `/status` as ready, or exits, or the deadline passes.
async fn wait_until_ready(keeper: &Keeper, port: u16, name: &str, deadline: Instant) -> Ready {
    let path = format!("/{name}/status");
    loop {
        if keeper.exited() {
            return Ready::Exited;
        }
        let status = tokio::time::timeout(Duration::from_secs(1), http_get(port, &path));
        if let Ok(Ok(answer)) = status.await
            && answer.starts_with("HTTP/1.1 200")
            && answer.contains("\"ready\":true")
        {
            return Ready::Yes;
        }
        if Instant::now() >= deadline {
            return Ready::TimedOut;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.1 GET to the loopback port, returning the whole answer (status line, headers
/// and body) as text. chromedriver keeps the connection open whatever the request says, so the
/// answer ends where its `Content-Length` says.
async fn http_get(port: u16, path: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..read]);
        if answer_complete(&answer) {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Whether an HTTP answer holds its headers and as much body as its `Content-Length` says.
fn answer_complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|window| window == b"\r\n\r\n") else { return false };
    let headers = String::from_utf8_lossy(&answer[..end]);
    let length = headers.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|length| answer.len() - (end + 4) >= length)
}

/// A loopback port nobody listens on right now. Another process may take it before chromedriver
/// does; chromedriver then exits and the start tries another.
fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// The session's capabilities: Chromium through the wrapper, its switches, profile and downloads.
fn capabilities(options: &BrowserOptions, dir: &Path, wrapper: &Path, downloads: &Path) -> Capabilities {
    let mut args: Vec<String> = CHROMIUM_SWITCHES.iter().map(|switch| (*switch).to_string()).collect();
    args.push(format!("--user-data-dir={}", dir.join("profile").display()));
    args.push(format!("--window-size={},{}", options.window_size.0, options.window_size.1));
    args.extend(options.args.iter().cloned());
    let chrome_options = json!({
        "binary": wrapper,
        "args": args,
        "prefs": {
            "download.default_directory": downloads,
            "download.prompt_for_download": false,
            "download.directory_upgrade": true,
            "credentials_enable_service": false,
            "profile.password_manager_enabled": false,
            "profile.password_manager_leak_detection": false,
        },
    });
    let mut capabilities = Capabilities::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert("goog:chromeOptions".into(), chrome_options);
    capabilities
}

/// Writes the script chromedriver starts as Chromium: the real binary under a death signal of
/// its own, after checking that chromedriver (the script's parent) is still its parent.
fn write_wrapper(path: &Path, chromium: &Path, crash_dir: &Path) -> io::Result<()> {
    let script = format!(
        "#!/bin/sh\n\
         # Chromium for fieldsync: it dies with chromedriver, its parent, however chromedriver ends.\n\
         # Its crash handler keeps its database in the run's directory.\n\
         export BREAKPAD_DUMP_LOCATION={crash_dir}\n\
         exec {setpriv} --pdeathsig KILL -- /bin/sh -c {check} sh \"$PPID\" {chromium} \"$@\"\n",
        crash_dir = shell_quote(&crash_dir.to_string_lossy()),
        setpriv = shell_quote(SETPRIV),
        check = shell_quote(PARENT_CHECK),
        chromium = shell_quote(&chromium.to_string_lossy()),
    );
    let mut file = File::create(path)?;
    file.write_all(script.as_bytes())?;
    file.set_permissions(fs::Permissions::from_mode(0o700))?;
    file.sync_all()
}

/// `text` in single quotes for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Kills every process of the group `pgid` (std cannot signal a group, and this crate has no
/// unsafe code to call `kill(2)`; the shell's `kill` can).
fn kill_group(pgid: u32) {
    let status = Command::new("/bin/sh")
        .args(["-c", r#"kill -s KILL -- "$1""#, "sh", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(error) = status {
        tracing::warn!(%error, pgid, "killing the browser's process group");
    }
}

/// Kills the processes `pids`.
fn kill_pids(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let status = Command::new("/bin/sh")
        .args(["-c", r#"kill -s KILL -- "$@""#, "sh"])
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(error) = status {
        tracing::warn!(%error, ?pids, "killing a stale browser's processes");
    }
}

/// Waits until no live process is left in the group `pgid` but its leader (chromedriver, a zombie
/// until it is reaped), nor any naming the run; whether that happened within `timeout`.
fn wait_for_group_end(pgid: u32, run_name: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let alive =
            all_processes().into_iter().any(|(pid, stat)| pid != pgid && stat.pgrp == pgid && stat.live())
                || !processes_mentioning(run_name).is_empty();
        if !alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The end of chromedriver's output, for an error message.
fn log_tail(dir: &Path) -> String {
    let log = fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter(|line| !line.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail: Vec<String> =
        lines[lines.len().saturating_sub(12)..].iter().map(|line| line.chars().take(300).collect()).collect();
    format!("; chromedriver's log ends:\n{}", tail.join("\n"))
}

/// The newest file in `dir` that is neither a download in progress nor one of `earlier`, when no
/// download is in progress.
fn finished_download(dir: &Path, earlier: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let file_name = entry.file_name();
        let name = file_name.to_string_lossy();
        if name.ends_with(".crdownload") {
            return None;
        }
        if name.starts_with('.') || earlier.contains(&file_name) {
            continue;
        }
        let Ok(metadata) = entry.metadata() else { continue };
        if !metadata.is_file() {
            continue;
        }
        let modified = metadata.modified().unwrap_or(std::time::UNIX_EPOCH);
        if newest.as_ref().is_none_or(|(time, _)| modified >= *time) {
            newest = Some((modified, entry.path()));
        }
    }
    newest.map(|(_, path)| path)
}

// ---------------------------------------------------------------------------------------------
// Run directories.

/// The run directory's name (`fieldsync-browser-…`).
fn run_name(dir: &Path) -> String {
    dir.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Makes a run's directory, private to this user (the profile holds the sites' cookies), and
/// writes its owner file.
fn make_run_dir(root: &Path) -> io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(RUN_PREFIX)
        .rand_bytes(10)
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(root)?;
    let me = std::process::id();
    let start = proc_stat(me).map(|stat| stat.start).unwrap_or(0);
    let mut owner = File::create(dir.path().join(OWNER_FILE))?;
    writeln!(owner, "{me} {start}")?;
    Ok(dir)
}

/// Whether the process named in an owner file (`pid start-time`) is still the one that wrote it.
fn owner_alive(owner: &str) -> bool {
    let mut words = owner.split_whitespace();
    let (Some(pid), Some(start)) = (words.next(), words.next()) else { return false };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else { return false };
    proc_stat(pid).is_some_and(|stat| stat.live() && stat.start == start)
}

/// Removes the run directories in `root` whose owner is gone, after killing any process still
/// using one. A directory without an owner file is young (its start is under way) or left by a
/// run killed in the instant between making it and writing the file; only an old one goes.
fn sweep_stale_runs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(RUN_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(metadata) = fs::symlink_metadata(&path) else { continue };
        if !metadata.is_dir() {
            continue;
        }
        match fs::read_to_string(path.join(OWNER_FILE)) {
            Ok(owner) if owner_alive(&owner) => continue,
            Ok(_) => {}
            Err(_) => {
                let age = metadata.modified().ok().and_then(|time| time.elapsed().ok());
                if age.is_none_or(|age| age < OWNERLESS_GRACE) {
                    continue;
                }
            }
        }
        let leftovers = processes_mentioning(&name);
        if !leftovers.is_empty() {
            tracing::warn!(dir = %path.display(), pids = ?leftovers, "killing a stale browser's processes");
            kill_pids(&leftovers);
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => tracing::debug!(dir = %path.display(), "removed a stale browser run directory"),
            Err(error) => {
                tracing::warn!(%error, dir = %path.display(), "removing a stale browser run directory")
            }
        }
    }
}

/// The live processes whose command line mentions the run directory `name` (its profile path,
/// its wrapper, chromedriver's URL base, the crash handler's database), followed by a character
/// that cannot continue the name.
fn processes_mentioning(name: &str) -> Vec<u32> {
    let needle = name.as_bytes();
    let me = std::process::id();
    let mut found = Vec::new();
    for (pid, stat) in all_processes() {
        if pid == me || !stat.live() {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let mentions = cmdline.windows(needle.len()).enumerate().any(|(at, window)| {
            window == needle
                && cmdline.get(at + needle.len()).is_none_or(|next| !next.is_ascii_alphanumeric())
        });
        if mentions {
            found.push(pid);
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Processes, from /proc.

/// What `/proc/<pid>/stat` says of a process.
#[derive(Clone, Copy, Debug)]
struct ProcStat {
    /// R, S, D, Z (exited, not yet reaped), X (dead), …
    state: char,
    /// The parent process.
    ppid: u32,
    /// The process group.
    pgrp: u32,
    /// Start time in clock ticks since boot: with the pid, names one process for good.
    start: u64,
}

impl ProcStat {
    /// Whether the process is running (not exited).
    fn live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// Reads `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a `/proc/<pid>/stat` line. The command name, in parentheses, may hold anything, so
/// the fields are counted from the last `)`.
fn parse_stat(line: &str) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Every process, with what its `stat` says.
fn all_processes() -> Vec<(u32, ProcStat)> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .collect()
}

/// chromedriver (when alive) and every live process in its group, descended from it, or naming the
/// run `run_name` in its command line.
fn browser_processes(chromedriver: u32, run_name: &str) -> Vec<u32> {
    let processes = all_processes();
    let mut found: Vec<u32> = Vec::new();
    if processes.iter().any(|(pid, stat)| *pid == chromedriver && stat.live()) {
        found.push(chromedriver);
    }
    let mut family = vec![chromedriver];
    // Descendants whose parents are found later in /proc's order need more than one pass.
    loop {
        let before = family.len();
        for (pid, stat) in &processes {
            if !family.contains(pid) && (stat.pgrp == chromedriver || family.contains(&stat.ppid)) {
                family.push(*pid);
                if stat.live() {
                    found.push(*pid);
                }
            }
        }
        if family.len() == before {
            for pid in processes_mentioning(run_name) {
                if !found.contains(&pid) {
                    found.push(pid);
                }
            }
            return found;
        }
    }
}

/// A process's resident memory in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A process's proportional share of memory in KiB (`Pss` of `smaps_rollup`).
fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|line| line.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// `program` in a directory of the `PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| is_executable(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_from_the_last_parenthesis() {
        let line = "4413 (chromium (x) y) S 3555 3555 3555 0 -1 4194560 1 0 0 0 3 1 0 0 20 0 21 0 987654 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!((stat.state, stat.ppid, stat.pgrp, stat.start), ('S', 3555, 3555, 987654));
        assert!(parse_stat("12 (x").is_none());
    }

    #[test]
    fn owners_are_alive_only_with_their_own_start_time() {
        let me = std::process::id();
        let start = proc_stat(me).unwrap().start;
        assert!(owner_alive(&format!("{me} {start}\n")));
        assert!(!owner_alive(&format!("{me} {}", start + 1)));
        assert!(!owner_alive("garbage"));
        assert!(!owner_alive(""));
    }

    #[test]
    fn answers_end_at_their_content_length() {
        assert!(!answer_complete(b"HTTP/1.1 200 OK\r\nContent-Length:5\r\n"));
        assert!(!answer_complete(b"HTTP/1.1 200 OK\r\nContent-Length:5\r\n\r\nabc"));
        assert!(answer_complete(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabcde"));
    }

    #[test]
    fn downloads_are_finished_files_that_were_not_there_before() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("old.csv"), "old").unwrap();
        let earlier = vec![std::ffi::OsString::from("old.csv")];
        assert_eq!(finished_download(dir.path(), &earlier), None);
        fs::write(dir.path().join("Unconfirmed 1.crdownload"), "par").unwrap();
        assert_eq!(finished_download(dir.path(), &earlier), None);
        fs::rename(dir.path().join("Unconfirmed 1.crdownload"), dir.path().join("members.csv")).unwrap();
        assert_eq!(finished_download(dir.path(), &earlier), Some(dir.path().join("members.csv")));
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("/opt/it's/chromium"), r"'/opt/it'\''s/chromium'");
    }
}
