//! Standard output, for people and programs. A reader that closes it early (`fieldsync run |
//! head`) ends the output quietly, as it does for `ripgrep`, instead of a panic with a
//! backtrace; the command itself goes on (a run still finishes and records its work).

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once standard output cannot be written any more; later output is dropped.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to standard output, unless its reader went away.
pub fn write(text: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        CLOSED.store(true, Ordering::Relaxed);
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: writing to standard output: {error}");
        }
    }
}

/// Writes bytes to standard output, unless its reader went away.
pub fn write_bytes(bytes: &[u8]) {
    write(format_args!("{}", String::from_utf8_lossy(bytes)));
}

/// Prints a value as pretty JSON: the serialisation of the type a use case returned, its
/// fields in the order the type declares them.
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    write(format_args!("{}\n", json_text(value)));
}

/// Prints what a use case returned: as JSON with `--json`, else as the text `render` makes.
pub fn show<T: serde::Serialize + ?Sized>(value: &T, json: bool, render: impl FnOnce(&T) -> String) {
    if json {
        print_json(value);
    } else {
        write(format_args!("{}", render(value)));
    }
}

/// A value as pretty JSON.
pub fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// `println!` to standard output, quiet when its reader went away.
macro_rules! outln {
    () => { $crate::output::write(format_args!("\n")) };
    ($($argument:tt)*) => { $crate::output::write(format_args!("{}\n", format_args!($($argument)*))) };
}
