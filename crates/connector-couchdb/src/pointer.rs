//! Field paths: JSON pointers (RFC 6901) into a document, checked once, read and written, and
//! named as Mango fields for `_find`.

use serde_json::{Map, Value as Json};

use crate::selector::join_field;

/// A JSON pointer into a document: `/name`, `/contact/email`, `/phones/0`. Its first name
/// never starts with `_`, which CouchDB reserves (`_id`, `_rev`, `_attachments`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pointer {
    text: String,
    names: Vec<String>,
}

impl Pointer {
    /// Reads a pointer; the error says why `text` is not one fieldsync can use.
    pub(crate) fn parse(text: &str) -> Result<Pointer, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "{text:?} is not a JSON pointer: it must start with `/`, as `/contact/email`"
            ));
        };
        let mut names = Vec::new();
        for raw in rest.split('/') {
            if raw.is_empty() {
                return Err(format!("{text:?} has an empty name"));
            }
            let mut name = String::new();
            let mut chars = raw.chars();
            while let Some(char) = chars.next() {
                match char {
                    '~' => match chars.next() {
                        Some('0') => name.push('~'),
                        Some('1') => name.push('/'),
                        _ => return Err(format!("{text:?}: `~` must be `~0` (a ~) or `~1` (a /)")),
                    },
                    other => name.push(other),
                }
            }
            names.push(name);
        }
        if names[0].starts_with('_') {
            return Err(format!(
                "{text:?}: CouchDB reserves top-level fields starting with `_` (`_id`, `_rev`, `_attachments`)"
            ));
        }
        Ok(Pointer { text: text.to_string(), names })
    }

    /// The pointer as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Its names, outermost first.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The Mango field name (`contact.email`, a dot in a name escaped).
    pub(crate) fn field(&self) -> String {
        join_field(&self.names)
    }

    /// The value at the pointer, `null` where the document has none.
    pub(crate) fn get(&self, document: &Json) -> Json {
        document.pointer(&self.text).cloned().unwrap_or(Json::Null)
    }

    /// Sets the value at the pointer, making the objects on the way; a `null` where the
    /// document has no value leaves it without one. Everything else in the document stays.
    ///
    /// # Errors
    ///
    /// When a value on the way is neither an object nor an array holding the index.
    pub(crate) fn set(&self, document: &mut Json, value: Json) -> Result<(), String> {
        if value.is_null() && document.pointer(&self.text).is_none() {
            return Ok(());
        }
        let (last, outer) = self.names.split_last().expect("a pointer has a name");
        let mut at = document;
        for (depth, name) in outer.iter().enumerate() {
            at = match at {
                Json::Object(members) => {
                    members.entry(name.clone()).or_insert_with(|| Json::Object(Map::new()))
                }
                Json::Array(items) => match name.parse::<usize>().ok().and_then(|index| items.get_mut(index))
                {
                    Some(item) => item,
                    None => return Err(self.blocked(depth, "an array without that item")),
                },
                Json::Null => {
                    *at = Json::Object(Map::new());
                    at.as_object_mut()
                        .expect("just made")
                        .entry(name.clone())
                        .or_insert(Json::Object(Map::new()))
                }
                _ => return Err(self.blocked(depth, "a value that is not an object")),
            };
        }
        match at {
            Json::Object(members) => {
                members.insert(last.clone(), value);
                Ok(())
            }
            Json::Array(items) => match last.parse::<usize>().ok().and_then(|index| items.get_mut(index)) {
                Some(item) => {
                    *item = value;
                    Ok(())
                }
                None => Err(self.blocked(outer.len(), "an array without that item")),
            },
            Json::Null => {
                let mut members = Map::new();
                members.insert(last.clone(), value);
                *at = Json::Object(members);
                Ok(())
            }
            _ => Err(self.blocked(outer.len(), "a value that is not an object")),
        }
    }

    fn blocked(&self, depth: usize, what: &str) -> String {
        let mut at = String::new();
        for name in &self.names[..depth] {
            at.push('/');
            at.push_str(&name.replace('~', "~0").replace('/', "~1"));
        }
        format!(
            "cannot write {}: the document holds {what} at {:?}",
            self.text,
            if at.is_empty() { "/" } else { &at }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_read_write_and_keep_the_rest_of_the_document() {
        let mut document = json!({ "name": "Zoë", "contact": { "phone": "+31 6 12345678" }, "tags": ["a"] });
        Pointer::parse("/contact/email").unwrap().set(&mut document, json!("zoe@example.nl")).unwrap();
        Pointer::parse("/club/name").unwrap().set(&mut document, json!("VV Oranje")).unwrap();
        Pointer::parse("/tags/0").unwrap().set(&mut document, json!("b")).unwrap();
        Pointer::parse("/missing").unwrap().set(&mut document, Json::Null).unwrap();
        assert_eq!(
            document,
            json!({
                "name": "Zoë", "contact": { "phone": "+31 6 12345678", "email": "zoe@example.nl" },
                "tags": ["b"], "club": { "name": "VV Oranje" }
            })
        );
        assert!(Pointer::parse("/name/first").unwrap().set(&mut document, json!("x")).is_err());
        assert!(Pointer::parse("/tags/3").unwrap().set(&mut document, json!("x")).is_err());
        assert_eq!(Pointer::parse("/contact/phone").unwrap().get(&document), json!("+31 6 12345678"));
        assert_eq!(Pointer::parse("/nothing/here").unwrap().get(&document), Json::Null);
    }

    #[test]
    fn pointers_are_checked_and_named_as_mango_fields() {
        assert_eq!(Pointer::parse("/contact/e.mail").unwrap().field(), "contact.e\\.mail");
        assert_eq!(Pointer::parse("/a~1b/c~0d").unwrap().names(), ["a/b", "c~d"]);
        for wrong in ["name", "", "/", "/a//b", "/_id", "/_attachments/x", "/a~2"] {
            assert!(Pointer::parse(wrong).is_err(), "{wrong}");
        }
    }
}
