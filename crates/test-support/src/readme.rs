//! [`readme_blocks`]: the README's examples, which tests run as written so that the README
//! cannot drift from what the binary accepts.

/// The code blocks in `language` (`toml`, `sql`) of the README's part that starts at `start` (a
/// heading or a sentence) and ends at the next `## ` heading, in order and without their
/// fences.
///
/// # Panics
///
/// When the README has no `start`, the part has no such block, or a block is not closed.
pub fn readme_blocks(start: &str, language: &str) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("reading {path}: {error}"));
    let from = readme.find(start).unwrap_or_else(|| panic!("the README has no {start:?}"));
    let part = &readme[from..];
    let part = &part[..part.find("\n## ").unwrap_or(part.len())];
    let blocks: Vec<String> = part
        .split(&format!("```{language}\n"))
        .skip(1)
        .map(|block| block[..block.find("```").expect("a closed block")].to_string())
        .collect();
    assert!(!blocks.is_empty(), "the README's part at {start:?} has no {language} block");
    blocks
}
