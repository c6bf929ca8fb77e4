//! `Processes`: the programs a test starts for a real system (a database server, a web server),
//! kept in one process group so that none of them outlives the test, whether the test drops
//! them, panics or is killed.

use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A test's processes, all in one process group whose leader is a watchdog shell: dropping
/// this kills the whole group and reaps the children, and the watchdog kills the group itself
/// (and removes the test's directory) when the test process is gone without dropping it.
#[derive(Debug)]
pub struct Processes {
    /// The process group: commands started outside [`Processes::spawn`] join it with
    /// `process_group(group)`.
    pub group: i32,
    /// The children started so far, the watchdog first.
    pub children: Vec<Child>,
}

/// The watchdog: waits while the test process (`$1`) lives; then, from a session of its own
/// (so that it outlives the group), kills its group and a second later removes `$2`.
const WATCHDOG: &str = r#"
    while kill -0 "$1" 2>/dev/null; do sleep 1; done
    exec setsid sh -c 'kill -KILL -"$1"; sleep 1; rm -rf -- "$2"' sh "$$" "$2"
"#;

impl Processes {
    /// Starts the watchdog of the test process, which removes `dir` when it has to kill.
    ///
    /// # Panics
    ///
    /// When `sh` cannot be started.
    pub fn start(dir: &Path) -> Processes {
        let watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "sh"])
            .arg(std::process::id().to_string())
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("sh runs");
        let group = i32::try_from(watchdog.id()).expect("a process id fits an i32");
        Processes { group, children: vec![watchdog] }
    }

    /// Spawns `command` (with no standard input) into the group; returns its index for
    /// [`Processes::exited`].
    ///
    /// # Panics
    ///
    /// When the command cannot be started, naming it as `what`.
    pub fn spawn(&mut self, command: &mut Command, what: &str) -> usize {
        let child = command
            .stdin(Stdio::null())
            .process_group(self.group)
            .spawn()
            .unwrap_or_else(|error| panic!("{what} could not start: {error}"));
        self.children.push(child);
        self.children.len() - 1
    }

    /// The exit status of a child that has ended.
    pub fn exited(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        self.children[index].try_wait().ok().flatten()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.group)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes `text` to a new file at `path` (a program's configuration), or panics naming it.
pub(crate) fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
}

/// A file at `path` that a started program's output is appended to, or a panic naming it.
pub(crate) fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|error| panic!("opening {}: {error}", path.display()))
}

/// Starts the server `command` makes for a port on a free port of 127.0.0.1, its output
/// appended to `log`, and waits until it accepts connections (and `ready` holds): its port and
/// its index in `processes`. A port taken meanwhile (the log says `taken`) is tried again with
/// another.
///
/// # Panics
///
/// When the server exits, or does not accept connections within `timeout`, with the end of
/// its log.
pub(crate) fn serve_on_free_port(
    processes: &mut Processes,
    what: &str,
    log: &Path,
    taken: &str,
    timeout: Duration,
    command: impl Fn(u16) -> Command,
    ready: impl Fn(u16) -> bool,
) -> (u16, usize) {
    for _attempt in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        let mut started = command(port);
        started.stdout(log_file(log)).stderr(log_file(log));
        let index = processes.spawn(&mut started, what);
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() && ready(port) {
                return (port, index);
            }
            if let Some(status) = processes.exited(index) {
                if std::fs::read_to_string(log).unwrap_or_default().contains(taken) {
                    break;
                }
                panic!("{what} exited ({status}) before accepting connections:\n{}", tail(log));
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not accept connections in {timeout:?}:\n{}",
                tail(log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("{what} found no free port in 5 tries:\n{}", tail(log))
}

/// Whether this process runs as root (as CI does): the servers that refuse root are then
/// started as their own system user.
pub(crate) fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// The last 40 lines of a log.
pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
