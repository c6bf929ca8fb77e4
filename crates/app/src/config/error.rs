//! `ConfigError`: what is wrong with a configuration file, each `Problem` with the file, line
//! and column (`Location`) it concerns, so an operator can go straight to the place.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A place in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The configuration file, as it was given to `load` or `parse`.
    pub file: PathBuf,
    /// The line, counted from 1.
    pub line: usize,
    /// The column in characters, counted from 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` of `text`, the contents of `file`.
    pub(crate) fn at(file: &Path, text: &str, offset: usize) -> Self {
        let offset = floor_char_boundary(text, offset);
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Self {
            file: file.to_path_buf(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One thing wrong with a configuration, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where it is.
    pub location: Location,
    /// What is wrong, in lower case, naming the setting and the value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.location, self.message)
    }
}

/// A configuration that could not be read or is not valid. Nothing was touched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, or not shaped like a configuration (an unknown key, a missing
    /// setting, a value of the wrong type). The TOML reader stops at the first of these.
    #[error("{location}: {message}\n{snippet}")]
    Toml {
        /// Where.
        location: Location,
        /// The TOML reader's message.
        message: String,
        /// The line in question with the place marked, for the terminal.
        snippet: String,
    },
    /// The file is well-formed, but some settings are not valid; every problem found is
    /// listed, in the order of the file.
    #[error("{}", render_problems(.problems))]
    Invalid {
        /// The problems, at least one.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem with its location: the one TOML error, or every invalid setting; none
    /// when the file could not be read.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { .. } => Vec::new(),
            ConfigError::Toml { location, message, .. } => {
                vec![Problem { location: location.clone(), message: message.clone() }]
            }
            ConfigError::Invalid { problems } => problems.clone(),
        }
    }

    /// An error of the TOML reader, placed in `file`.
    pub(crate) fn from_toml(error: &toml::de::Error, file: &Path, text: &str) -> Self {
        let span = error.span().unwrap_or(0..0);
        ConfigError::Toml {
            location: Location::at(file, text, span.start),
            message: error.message().trim_end().to_string(),
            snippet: snippet(text, span),
        }
    }
}

fn render_problems(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("\n")
}

/// The line holding `span` with the span marked by carets, as rustc and toml show it.
fn snippet(text: &str, span: Range<usize>) -> String {
    let start = floor_char_boundary(text, span.start);
    let line_start = text[..start].rfind('\n').map_or(0, |newline| newline + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |newline| start + newline);
    let line = text[line_start..line_end].trim_end_matches('\r');
    let line_number = text[..start].matches('\n').count() + 1;
    let gutter = " ".repeat(line_number.to_string().len());
    let column = text[line_start..start].chars().count();
    let end = floor_char_boundary(text, span.end.clamp(start, line_end));
    let width = text[start..end].chars().count().max(1);
    format!("{gutter} |\n{line_number} | {line}\n{gutter} | {}{}", " ".repeat(column), "^".repeat(width))
}

/// The largest char boundary of `text` at or before `offset`.
fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_characters_from_one() {
        let text = "a = 1\nbé = \"x\"\n";
        let location = Location::at(Path::new("f.toml"), text, text.find("\"x").unwrap());
        assert_eq!(location.to_string(), "f.toml:2:6");
        assert_eq!(Location::at(Path::new("f.toml"), text, 0).to_string(), "f.toml:1:1");
    }

    #[test]
    fn snippets_mark_the_span() {
        let text = "a = 1\nkind = \"rst\"\n";
        let start = text.find("\"rst").unwrap();
        assert_eq!(snippet(text, start..start + 5), "  |\n2 | kind = \"rst\"\n  |        ^^^^^");
    }
}
