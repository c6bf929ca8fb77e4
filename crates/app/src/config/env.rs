//! `${NAME}` substitution: secrets and machine-specific paths come from the environment, so
//! the configuration file itself can be shared. Values are substituted, never logged.

/// Replaces every `${NAME}` in `text` by `lookup(NAME)`.
///
/// # Errors
///
/// Names the first variable that `lookup` does not know, or says why a `${` is malformed.
/// The message never holds the value of any variable.
pub(crate) fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut expanded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        expanded.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("`${` has no closing `}`".to_string());
        };
        let name = &after[..end];
        if !is_variable_name(name) {
            return Err(format!(
                "`${{{}}}` is not a variable name (letters, digits and underscores, not starting with a digit)",
                name.escape_debug()
            ));
        }
        match lookup(name) {
            Some(value) => expanded.push_str(&value),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    expanded.push_str(rest);
    Ok(expanded)
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
        && chars.all(|char| char == '_' || char.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "HOME_DIR").then(|| "/home/club".to_string())
    }

    #[test]
    fn substitutes_and_names_what_is_missing() {
        assert_eq!(expand("${HOME_DIR}/m.db", &lookup), Ok("/home/club/m.db".to_string()));
        assert_eq!(expand("plain $ text", &lookup), Ok("plain $ text".to_string()));
        assert_eq!(expand("${HOME_DIR}${HOME_DIR}", &lookup), Ok("/home/club/home/club".to_string()));
        assert_eq!(expand("${SECRET}", &lookup), Err("environment variable SECRET is not set".to_string()));
        assert!(expand("${HOME_DIR", &lookup).is_err());
        assert!(expand("${1X}", &lookup).is_err());
    }
}
