//! [`Fieldsync`]: the `fieldsync` binary run as a user runs it, in a directory of the test's,
//! with the environment the test gives and nothing of the test's own configuration.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary at a path (a test passes `env!("CARGO_BIN_EXE_fieldsync")`), run in one
/// directory, with environment variables, some of them secrets that must never reach its logs.
pub struct Fieldsync<'a> {
    program: PathBuf,
    dir: PathBuf,
    env: Vec<(String, String)>,
    secrets: Vec<String>,
    log: Option<Box<dyn Fn() -> String + 'a>>,
}

impl<'a> Fieldsync<'a> {
    /// The binary `program` run in `dir`.
    pub fn new(program: impl Into<PathBuf>, dir: &Path) -> Self {
        Fieldsync {
            program: program.into(),
            dir: dir.to_path_buf(),
            env: Vec::new(),
            secrets: Vec::new(),
            log: None,
        }
    }

    /// Sets an environment variable for every command.
    #[must_use]
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets an environment variable whose value [`Fieldsync::run`] checks never shows in the
    /// binary's standard error.
    #[must_use]
    pub fn secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.push(value.to_string());
        self.env(name, value)
    }

    /// Adds `log` (a site's request log, say) to the message of a failed run.
    #[must_use]
    pub fn log(mut self, log: impl Fn() -> String + 'a) -> Self {
        self.log = Some(Box::new(log));
        self
    }

    /// The command with `args`, to run or spawn as the test likes; `FIELDSYNC_CONFIG` and
    /// `FIELDSYNC_LOG` are taken from its environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command
            .current_dir(&self.dir)
            .args(args)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .env_remove("FIELDSYNC_CONFIG")
            .env_remove("FIELDSYNC_LOG");
        command
    }

    /// Runs the command with `args` to its end.
    ///
    /// # Panics
    ///
    /// When the binary does not start.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the fieldsync binary runs")
    }

    /// Runs the command with `args` (`["run", "--json"]`, say) for the test's `step`, prints how
    /// long it took, and reads its JSON.
    ///
    /// # Panics
    ///
    /// When the binary does not start, a secret shows in its standard error, or its standard
    /// output is not JSON.
    pub fn run(&self, step: &str, args: &[&str]) -> RunOutput {
        let started = Instant::now();
        let output = self.output(args);
        let took = started.elapsed();
        eprintln!("{step}: {:.1} s", took.as_secs_f64());
        let stderr = String::from_utf8_lossy(&output.stderr);
        for secret in &self.secrets {
            assert!(!stderr.contains(secret.as_str()), "{step}: a secret reached the logs");
        }
        let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{step}: not JSON ({error}):\n{}\nstderr:\n{stderr}\n{}",
                String::from_utf8_lossy(&output.stdout),
                self.log_text()
            )
        });
        RunOutput { output, json, took }
    }

    /// Runs `fieldsync run --json` and more `args` for `step`, which must end with exit code
    /// `code`.
    ///
    /// # Panics
    ///
    /// As [`Fieldsync::run`] does, and when the exit code is another.
    pub fn run_ending(&self, step: &str, args: &[&str], code: i32) -> RunOutput {
        let mut all = vec!["run", "--json"];
        all.extend_from_slice(args);
        let run = self.run(step, &all);
        assert_eq!(
            run.code(),
            Some(code),
            "{step}: fieldsync {all:?}: {:#}\nstderr:\n{}\n{}",
            run.json,
            run.stderr(),
            self.log_text()
        );
        run
    }

    /// The dead outbox entries, as `fieldsync outbox list --status dead --json` prints them.
    ///
    /// # Panics
    ///
    /// When the binary does not start or does not print JSON.
    pub fn dead_entries(&self) -> Value {
        json(&self.output(&["outbox", "list", "--status", "dead", "--json"]))
    }

    /// The one dead outbox entry.
    ///
    /// # Panics
    ///
    /// As [`Fieldsync::dead_entries`] does, and when there is not exactly one.
    pub fn only_dead_entry(&self) -> Value {
        let dead = self.dead_entries();
        assert_eq!(dead.as_array().map(Vec::len), Some(1), "exactly one dead entry: {dead:#}");
        dead[0].clone()
    }

    fn log_text(&self) -> String {
        self.log.as_ref().map(|log| log()).unwrap_or_default()
    }
}

/// What one command printed and how long it took.
#[derive(Debug)]
pub struct RunOutput {
    /// The process's output.
    pub output: Output,
    /// Its standard output as JSON.
    pub json: Value,
    /// How long it ran.
    pub took: Duration,
}

impl RunOutput {
    /// The exit code; `None` when a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// The standard error, as text.
    pub fn stderr(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.output.stderr)
    }

    /// The first link's report of a `run --json`.
    pub fn report(&self) -> Value {
        self.json[0].clone()
    }
}

/// A command's standard output as JSON.
///
/// # Panics
///
/// When it is not JSON; the message holds both outputs.
pub fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "not JSON ({error}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}
