//! How the command line watches runs: a progress bar per link on a terminal, through the
//! engine's `Progress` trait (hidden when standard error is not a terminal), and each link's
//! report printed as its run ends (`RunPrinter`, the workspace's `RunObserver`).

use std::io::IsTerminal as _;

use fieldsync_app::WorkspaceError;
use fieldsync_app::workspace::{Progress, RunObserver, RunReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::render;

/// Draws one bar (or spinner) per phase on standard error.
pub struct TerminalProgress {
    bar: ProgressBar,
}

impl TerminalProgress {
    /// A progress display; silent unless `enabled` and standard error is a terminal.
    pub fn new(enabled: bool) -> Self {
        let target = if enabled { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(None, target);
        Self { bar }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for TerminalProgress {
    fn phase(&self, name: &str, total: Option<u64>) {
        self.bar.reset();
        match total {
            Some(total) => {
                self.bar.set_length(total);
                self.bar.set_style(
                    ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} ({per_sec})")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
            }
            None => {
                self.bar.unset_length();
                self.bar.set_style(
                    ProgressStyle::with_template("{msg:>24} {spinner} {pos} records ({per_sec})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
            }
        }
        self.bar.set_message(name.to_string());
    }

    fn advance(&self, count: u64) {
        self.bar.inc(count);
    }
}

/// Shows runs as they go: progress on a terminal, and each report as text unless the
/// command prints JSON.
pub struct RunPrinter {
    json: bool,
}

impl RunPrinter {
    /// A printer for a command that prints JSON (`json`) or text.
    pub fn new(json: bool) -> Self {
        Self { json }
    }
}

impl RunObserver for RunPrinter {
    type Progress = TerminalProgress;

    fn link_starts(&mut self, _link: &str) -> TerminalProgress {
        TerminalProgress::new(!self.json && std::io::stderr().is_terminal())
    }

    fn link_ends(&mut self, progress: TerminalProgress, report: Option<&RunReport>) {
        progress.finish();
        if let Some(report) = report
            && !self.json
        {
            outln!("{}", render::run_report(report));
        }
    }

    fn link_failed(&mut self, _link: &str, error: &WorkspaceError) {
        eprintln!("error: {}", fieldsync_app::workspace::error_chain(error));
    }
}
