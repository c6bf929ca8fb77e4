//! The browser's life cycle: a start, a page read, photographed and downloaded from, and a close
//! that leaves nothing; a browser that outlives the thread that started it; `kill -9` of fieldsync
//! leaving no browser process; stale run directories swept at the next start.
//!
//! The tests need Debian's `chromium` and `chromium-driver`. Without them they skip, saying so,
//! unless `FIELDSYNC_REQUIRE_ALL` is set, when they fail instead.
#![cfg(target_os = "linux")]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use fantoccini::Locator;
use fieldsync_connector_browser::{Browser, BrowserOptions};
use serde_json::json;

/// The options for a test's browser, or `None` (after saying so) when the programs are missing.
fn options_or_skip() -> Option<BrowserOptions> {
    let options = BrowserOptions::default();
    match Browser::available(&options) {
        Ok(()) => Some(options),
        Err(missing) => {
            assert!(
                std::env::var_os("FIELDSYNC_REQUIRE_ALL").is_none(),
                "a headless Chromium is needed but {missing}, and FIELDSYNC_REQUIRE_ALL is set"
            );
            let test = std::thread::current().name().unwrap_or("a test").to_owned();
            eprintln!("SKIPPED: {test} needs a headless Chromium, but {missing}");
            None
        }
    }
}

/// What the test site's export answers.
const EXPORT_CSV: &str =
    "knvb_id,first_name,email\nFS00001,Anna,anna@example.com\nFS00002,Bram,bram@example.com\n";

/// Serves a page with a greeting and a link to a CSV export, on a free loopback port; returns
/// its base URL.
async fn serve_site() -> String {
    let page = Html(
        "<!doctype html><html><head><title>Members</title></head><body>\
         <h1 id=\"greeting\">Hello, fieldsync</h1>\
         <a id=\"export\" href=\"/export.csv\">Export</a></body></html>",
    );
    let export = || async {
        (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"members.csv\""),
            ],
            EXPORT_CSV,
        )
            .into_response()
    };
    let app = Router::new().route("/", get(move || async move { page })).route("/export.csv", get(export));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("the port"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("the test site") });
    base
}

/// A process, named for good by its id and start time (ids are reused).
#[derive(Clone, Copy, Debug)]
struct Process {
    pid: u32,
    start: u64,
}

impl Process {
    /// The process `pid` as it is now; `None` when there is none.
    fn of(pid: u32) -> Option<Process> {
        let (_, start) = stat(pid)?;
        Some(Process { pid, start })
    }

    /// Whether it still runs: it exists, is not a zombie and is the same process.
    fn alive(self) -> bool {
        stat(self.pid).is_some_and(|(state, start)| state != 'Z' && state != 'X' && start == self.start)
    }
}

/// A process's state and start time from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = line[line.rfind(')')? + 1..].split_whitespace().collect();
    Some((fields.first()?.chars().next()?, fields.get(19)?.parse().ok()?))
}

/// Waits (at most `timeout`) until none of `processes` runs; returns those still running.
fn wait_until_gone(processes: &[Process], timeout: Duration) -> Vec<Process> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<Process> = processes.iter().copied().filter(|process| process.alive()).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The running processes whose command line mentions `text` (a run directory's name).
fn processes_mentioning(text: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter(|&pid| Process::of(pid).is_some_and(Process::alive))
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| line.windows(text.len()).any(|window| window == text.as_bytes()))
        })
        .collect()
}

/// The name of a run directory (`fieldsync-browser-…`).
fn name_of(dir: &Path) -> String {
    dir.file_name().expect("a directory name").to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_reads_a_page_takes_a_screenshot_downloads_and_leaves_nothing_when_closed() {
    let Some(options) = options_or_skip() else { return };
    let site = serve_site().await;
    let browser = Browser::start(&options).await.expect("the browser starts");
    let run_dir = browser.run_dir().to_path_buf();
    assert!(name_of(&run_dir).starts_with("fieldsync-browser-"), "{}", run_dir.display());
    assert!(browser.profile_dir().is_dir());
    eprintln!("started in {:?}", browser.started_in());

    let client = browser.client();
    client.goto(&format!("{site}/")).await.expect("open the page");
    let greeting = client.find(Locator::Css("#greeting")).await.expect("the greeting");
    assert_eq!(greeting.text().await.unwrap(), "Hello, fieldsync");
    assert_eq!(client.title().await.unwrap(), "Members");

    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.len() > 1000, "a screenshot of {} bytes", png.len());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");

    // The CSV export, fetched from within the page, with the page's cookies.
    let fetch = "const [url, done] = arguments; \
        fetch(url, { credentials: 'same-origin' }) \
          .then(answer => answer.text().then(text => done({ status: answer.status, text }))) \
          .catch(error => done({ error: String(error) }));";
    let fetched = client.execute_async(fetch, vec![json!("/export.csv")]).await.expect("fetch the export");
    assert_eq!(fetched["status"], 200, "{fetched}");
    assert_eq!(fetched["text"].as_str(), Some(EXPORT_CSV));

    // The same export as a download in headless mode, into the run's own downloads directory.
    assert!(browser.downloads_dir().starts_with(&run_dir));
    client.find(Locator::Css("#export")).await.unwrap().click().await.expect("click the export");
    let file = browser.wait_for_download(Duration::from_secs(20)).await.expect("the download");
    assert_eq!(file.file_name().unwrap(), "members.csv");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), EXPORT_CSV);

    let memory = browser.memory_kib().expect("the browser's memory");
    let share = browser.proportional_memory_kib().expect("the browser's share of memory");
    eprintln!(
        "chromedriver and Chromium: {} processes, {memory} KiB resident in all, {share} KiB their share",
        browser.pids().len()
    );
    assert!(memory > 10_000, "{memory} KiB");
    assert!(share > 10_000 && share <= memory, "{share} KiB of {memory} KiB");

    let processes: Vec<Process> = browser.pids().into_iter().filter_map(Process::of).collect();
    assert_eq!(processes[0].pid, browser.chromedriver_pid());
    assert!(processes.iter().any(|process| Some(process.pid) == browser.chromium_pid()));
    assert!(processes.len() >= 3, "chromedriver, Chromium and its helpers: {processes:?}");

    let closing = Instant::now();
    browser.close().await;
    eprintln!("closed in {:?}", closing.elapsed());
    let alive = wait_until_gone(&processes, Duration::from_secs(5));
    assert!(alive.is_empty(), "still running after close: {alive:?}");
    assert!(processes_mentioning(&name_of(&run_dir)).is_empty());
    assert!(!run_dir.exists(), "{} was removed", run_dir.display());
}

#[test]
fn a_browser_outlives_the_thread_that_started_it() {
    // chromedriver's death signal belongs to the thread that started it: a browser started from a
    // thread that then ends (as tokio's blocking threads do when idle) must keep running.
    let Some(options) = options_or_skip() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let handle = runtime.handle().clone();
    let starter = std::thread::spawn(move || handle.block_on(Browser::start(&options)));
    let browser = starter.join().expect("the starting thread").expect("the browser starts");
    // The starting thread has ended; give a death signal time to land.
    std::thread::sleep(Duration::from_secs(1));
    assert!(Process::of(browser.chromedriver_pid()).is_some_and(Process::alive), "chromedriver runs");
    runtime.block_on(async {
        let client = browser.client();
        client.goto("data:text/html,<p id=here>still here</p>").await.expect("the browser still answers");
        let text = client.find(Locator::Css("#here")).await.unwrap().text().await.unwrap();
        assert_eq!(text, "still here");
        browser.close().await;
    });
}

/// Set (to a directory for the run directories) in the child process of
/// `kill_9_of_fieldsync_leaves_no_browser_process`.
const HOLDER_ENV: &str = "FIELDSYNC_BROWSER_TEST_HOLDER";
/// What the child prints once its browser is up, followed by the browser's process ids.
const HOLDER_UP: &str = "FIELDSYNC-BROWSER-UP";

/// Not a test by itself: when the parent test runs this binary again with `HOLDER_ENV` set, it
/// starts a browser, opens a page, prints the browser's processes and sleeps until killed.
#[test]
fn browser_holder_child() {
    let Some(root) = std::env::var_os(HOLDER_ENV) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let browser = runtime.block_on(async {
        let options = BrowserOptions { temp_dir: Some(PathBuf::from(root)), ..BrowserOptions::default() };
        let browser = Browser::start(&options).await.expect("child: the browser starts");
        let client = browser.client();
        client.goto("data:text/html,<p>busy</p>").await.expect("child: open a page");
        browser
    });
    let pids: Vec<String> = browser.pids().iter().map(u32::to_string).collect();
    println!("{HOLDER_UP} {} {}", browser.run_dir().display(), pids.join(" "));
    std::thread::sleep(Duration::from_secs(120));
    drop(browser);
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_fieldsync_leaves_no_browser_process() {
    let Some(options) = options_or_skip() else { return };
    let root = tempfile::tempdir().expect("a directory for run directories");
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("this test binary"))
            .args(["--exact", "browser_holder_child", "--nocapture", "--test-threads", "1"])
            .env(HOLDER_ENV, root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the browser holder"),
    );
    let stdout = child.0.stdout.take().expect("the child's output");
    let (lines, up) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test browser_holder_child ... " on the same line first.
            if let Some(at) = line.find(HOLDER_UP) {
                let _ = lines.send(line[at + HOLDER_UP.len()..].trim().to_owned());
                return;
            }
        }
    });
    let line = up.recv_timeout(Duration::from_secs(90)).unwrap_or_else(|_| {
        panic!("the child never said its browser was up (status {:?})", child.0.try_wait())
    });
    let mut words = line.split_whitespace();
    let run_dir = PathBuf::from(words.next().expect("the run directory"));
    let processes: Vec<Process> =
        words.map(|pid| pid.parse().expect("a pid")).filter_map(Process::of).collect();
    assert!(processes.len() >= 3, "chromedriver, Chromium and its helpers: {processes:?}");
    assert!(run_dir.starts_with(root.path()) && run_dir.is_dir(), "{}", run_dir.display());
    assert!(processes.iter().all(|process| process.alive()));

    // SIGKILL: no destructor runs in the child. The kernel's death signals do the work.
    let killed = Instant::now();
    child.0.kill().expect("kill the child");
    child.0.wait().expect("reap the child");
    let alive = wait_until_gone(&processes, Duration::from_secs(10));
    assert!(alive.is_empty(), "still running {:?} after the kill: {alive:?}", killed.elapsed());
    eprintln!("all {} browser processes gone {:?} after kill -9", processes.len(), killed.elapsed());
    let name = name_of(&run_dir);
    assert!(processes_mentioning(&name).is_empty(), "a process still uses {name}");

    // The killed run's directory stays behind, until the next start sweeps it.
    assert!(run_dir.is_dir());
    let options = BrowserOptions { temp_dir: Some(root.path().to_path_buf()), ..options };
    let browser = Browser::start(&options).await.expect("the next browser starts");
    assert!(!run_dir.exists(), "the stale {} was swept", run_dir.display());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_run_directories_are_swept_at_start() {
    let Some(options) = options_or_skip() else { return };
    let root = tempfile::tempdir().expect("a directory for run directories");
    let make = |name: &str, owner: Option<String>| {
        let dir = root.path().join(name);
        std::fs::create_dir_all(dir.join("profile")).unwrap();
        std::fs::write(dir.join("profile/Cookies"), "old cookies").unwrap();
        if let Some(owner) = owner {
            std::fs::write(dir.join("owner"), owner).unwrap();
        }
        dir
    };
    // A process that has ended: its id names no one (or, reused, someone with another start time).
    let mut ended = Command::new("true").spawn().expect("spawn true");
    let ended_pid = ended.id();
    ended.wait().unwrap();
    let dead = make("fieldsync-browser-deadowner", Some(format!("{ended_pid} 1\n")));
    // A stale directory that a process still uses: the sweep kills it first.
    let used = make("fieldsync-browser-stillused", Some("4000000000 1\n".into()));
    let mut user = KillOnDrop(
        Command::new("tail")
            .arg("-f")
            .arg(used.join("profile/Cookies"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn tail"),
    );
    // This process's own (a live owner), and one whose start is still under way (no owner yet).
    let me = std::process::id();
    let my_start = stat(me).expect("this process").1;
    let live = make("fieldsync-browser-liveowner", Some(format!("{me} {my_start}\n")));
    let young = make("fieldsync-browser-noowneryet", None);
    // Not a run directory at all.
    let other = make("someone-elses-dir", Some("4000000000 1\n".into()));

    let options = BrowserOptions { temp_dir: Some(root.path().to_path_buf()), ..options };
    let browser = Browser::start(&options).await.expect("the browser starts");
    assert!(!dead.exists(), "the dead owner's directory was swept");
    assert!(!used.exists(), "the used stale directory was swept");
    let status = user.0.wait().expect("reap tail");
    assert!(!status.success(), "the process using a stale directory was killed: {status:?}");
    assert!(live.is_dir(), "a live owner's directory is kept");
    assert!(young.is_dir(), "a directory whose start is under way is kept");
    assert!(other.is_dir(), "other directories are not touched");
    let run_dir = browser.run_dir().to_path_buf();
    assert!(run_dir.starts_with(root.path()));
    browser.close().await;
    assert!(!run_dir.exists());
}
