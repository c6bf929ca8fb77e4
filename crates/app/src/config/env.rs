//! `${NAME}` substitution: secrets and machine-specific paths come from the environment, so
//! the configuration file itself can be shared. In a link with `for_each = "organisations"`,
//! `${org.NAME}` stands for a variable of the organisation, and references nest, so that each
//! organisation's secret has a name of its own: `${CLUB_${org.id}_API_KEY}`. Values are
//! substituted, never logged, and never read again as references: an organisation's variable
//! that holds `${…}` is taken as it is.

use super::organisations::Organisation;

/// Replaces every `${NAME}` in `text` by `lookup(NAME)`, and every `${org.NAME}` by the
/// variable of `org`; a reference inside a reference is substituted first.
///
/// # Errors
///
/// Names the first variable that `lookup` or `org` does not know, or says why a `${` is
/// malformed. The message never holds the value of any variable.
pub(crate) fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    org: Option<&Organisation>,
) -> Result<String, String> {
    let mut expanded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        expanded.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = closing(after).ok_or_else(|| "`${` has no closing `}`".to_string())?;
        let name = expand(&after[..end], lookup, org)?;
        expanded.push_str(&value_of(&name, lookup, org)?);
        rest = &after[end + 1..];
    }
    expanded.push_str(rest);
    Ok(expanded)
}

/// Whether `text` holds a `${org.…}` reference (its value differs between organisations).
pub(crate) fn mentions_organisation(text: &str) -> bool {
    text.contains("${org.")
}

/// The offset of the `}` that closes a reference whose name starts `after`, past any
/// reference nested in it.
fn closing(after: &str) -> Option<usize> {
    let mut depth = 0_usize;
    let bytes = after.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'$' if bytes.get(at + 1) == Some(&b'{') => {
                depth += 1;
                at += 1;
            }
            b'}' if depth == 0 => return Some(at),
            b'}' => depth -= 1,
            _ => {}
        }
        at += 1;
    }
    None
}

fn value_of(
    name: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    org: Option<&Organisation>,
) -> Result<String, String> {
    if let Some(variable) = name.strip_prefix("org.") {
        let Some(org) = org else {
            return Err(format!(
                "`${{org.{variable}}}` is an organisation's variable, known only in a link with for_each = \"organisations\""
            ));
        };
        return org.variable(variable).map(str::to_string).ok_or_else(|| {
            let mut known: Vec<&str> = vec!["id", "name"];
            known.extend(org.variables.keys().map(String::as_str));
            format!("the organisation list has no column {variable:?} (it has {})", known.join(", "))
        });
    }
    if !is_variable_name(name) {
        return Err(format!(
            "`${{{}}}` is not a variable name (letters, digits and underscores, not starting with a digit)",
            name.escape_debug()
        ));
    }
    lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
        && chars.all(|char| char == '_' || char.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/home/club".to_string()),
            "CLUB_hcu_KEY" => Some("k-hcu".to_string()),
            _ => None,
        }
    }

    fn club() -> Organisation {
        let variables = BTreeMap::from([("file".to_string(), "${HOME_DIR}.db".to_string())]);
        Organisation { id: "hcu".into(), name: "HC Utrecht".into(), variables }
    }

    #[test]
    fn substitutes_and_names_what_is_missing() {
        let expand = |text| expand(text, &lookup, None);
        assert_eq!(expand("${HOME_DIR}/m.db"), Ok("/home/club/m.db".to_string()));
        assert_eq!(expand("plain $ text {}"), Ok("plain $ text {}".to_string()));
        assert_eq!(expand("${HOME_DIR}${HOME_DIR}"), Ok("/home/club/home/club".to_string()));
        assert_eq!(expand("${SECRET}"), Err("environment variable SECRET is not set".to_string()));
        assert!(expand("${HOME_DIR").is_err());
        assert!(expand("${1X}").is_err());
        assert!(expand("${org.id}").unwrap_err().contains("known only in a link with for_each"));
    }

    #[test]
    fn an_organisation_has_its_own_values_and_secrets() {
        let club = club();
        let expand = |text| expand(text, &lookup, Some(&club));
        assert_eq!(expand("clubs/${org.id}.db"), Ok("clubs/hcu.db".to_string()));
        assert_eq!(expand("${org.name}"), Ok("HC Utrecht".to_string()));
        assert_eq!(expand("Bearer ${CLUB_${org.id}_KEY}"), Ok("Bearer k-hcu".to_string()));
        // An organisation's value is data: never read as a reference to the environment.
        assert_eq!(expand("${org.file}"), Ok("${HOME_DIR}.db".to_string()));
        let error = expand("${org.colour}").unwrap_err();
        assert_eq!(error, "the organisation list has no column \"colour\" (it has id, name, file)");
        let error = expand("${CLUB_${org.name}_KEY}").unwrap_err();
        assert!(error.contains("is not a variable name"), "{error}");
        assert!(expand("${CLUB_${org.id}_KEY").is_err());
    }
}
