//! Field paths into JSON records: a JSON Pointer (RFC 6901) whose segments may carry a filter
//! for arrays of objects, `/meta/contact_info[type=email]/value`: the `value` of the element
//! of `contact_info` whose `type` is `email`.
//!
//! Reading follows the path and yields `null` where anything is missing. Writing sets the
//! value, making the objects on the way and, for a filter no element matches, appending an
//! element that matches it. A write is sent as its *unit*: the path up to the first array
//! it goes into (or the whole path), because APIs replace arrays whole.

use std::fmt;

use serde_json::{Map, Value};

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// A member of an object (or an index into an array, when it is a number).
    Member(String),
    /// A member holding an array, and the element whose `field` equals `value`.
    Filter { member: String, field: String, value: String },
}

/// A parsed field path.
#[derive(Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<Segment>,
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

/// Undoes RFC 6901's escapes (`~1` is `/`, `~0` is `~`).
fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

impl FieldPath {
    /// Parses a path. A bare name (`email`) is the member of that name, as `/email`.
    ///
    /// # Errors
    ///
    /// Says what is wrong: an empty path or segment, or a filter that is not
    /// `name[field=value]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let body = text.strip_prefix('/').unwrap_or(text);
        if body.is_empty() {
            return Err(format!("field path {text:?} is empty"));
        }
        let mut segments = Vec::new();
        for raw in body.split('/') {
            if raw.is_empty() {
                return Err(format!("field path {text:?} has an empty segment"));
            }
            let segment = match raw.split_once('[') {
                None => Segment::Member(unescape(raw)),
                Some((member, filter)) => {
                    let filter = filter.strip_suffix(']').ok_or_else(|| {
                        format!("field path {text:?}: filter `[{filter}` has no closing `]`")
                    })?;
                    let (field, value) = filter.split_once('=').ok_or_else(|| {
                        format!("field path {text:?}: filter `[{filter}]` must be `[field=value]`")
                    })?;
                    if member.is_empty() || field.is_empty() {
                        return Err(format!(
                            "field path {text:?}: filter `{raw}` names no array or no field"
                        ));
                    }
                    Segment::Filter {
                        member: unescape(member),
                        field: unescape(field),
                        value: unescape(value),
                    }
                }
            };
            segments.push(segment);
        }
        Ok(Self { text: text.to_string(), segments })
    }

    /// The path as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the path goes into an array element by a filter (`[type=email]`).
    pub fn has_filter(&self) -> bool {
        self.segments.iter().any(|segment| matches!(segment, Segment::Filter { .. }))
    }

    /// The name of the record's member the path starts with (`email` of `/email/primary`).
    pub fn first_member(&self) -> Option<&str> {
        match self.segments.first()? {
            Segment::Member(name) | Segment::Filter { member: name, .. } => Some(name),
        }
    }

    /// The name of the member the path ends with (`knvb_id` of `/meta/knvb_id`).
    pub fn last_member(&self) -> Option<&str> {
        match self.segments.last()? {
            Segment::Member(name) => Some(name),
            Segment::Filter { .. } => None,
        }
    }

    /// Removes from `record` the array elements the path's first filter matches: an empty
    /// value in an array is no element at all. Does nothing when the path has no filter or
    /// the array is not there.
    pub fn remove_element(&self, record: &mut Value) {
        let mut current = record;
        for segment in &self.segments {
            match segment {
                Segment::Member(name) => {
                    let next = match current {
                        Value::Object(members) => members.get_mut(name),
                        Value::Array(items) => {
                            name.parse::<usize>().ok().and_then(|index| items.get_mut(index))
                        }
                        _ => None,
                    };
                    match next {
                        Some(next) => current = next,
                        None => return,
                    }
                }
                Segment::Filter { member, field, value } => {
                    if let Some(Value::Array(items)) = current.get_mut(member) {
                        items.retain(|item| !matches(item, field, value));
                    }
                    return;
                }
            }
        }
    }

    /// The value at this path in `record`, `null` where anything on the way is missing.
    pub fn get(&self, record: &Value) -> Value {
        let mut current = record;
        for segment in &self.segments {
            let next = match segment {
                Segment::Member(name) => match current {
                    Value::Object(members) => members.get(name),
                    Value::Array(items) => name.parse::<usize>().ok().and_then(|index| items.get(index)),
                    _ => None,
                },
                Segment::Filter { member, field, value } => current
                    .get(member)
                    .and_then(Value::as_array)
                    .and_then(|items| items.iter().find(|item| matches(item, field, value))),
            };
            match next {
                Some(next) => current = next,
                None => return Value::Null,
            }
        }
        current.clone()
    }

    /// Sets the value at this path in `record`, making what is missing on the way.
    ///
    /// # Errors
    ///
    /// Fails when something on the way is neither missing nor of the kind the path needs
    /// (a text where an object must be).
    pub fn set(&self, record: &mut Value, value: Value) -> Result<(), String> {
        let mut current = record;
        let last = self.segments.len() - 1;
        for (index, segment) in self.segments.iter().enumerate() {
            if current.is_null() {
                *current = Value::Object(Map::new());
            }
            let here = match segment {
                Segment::Member(name) => match current {
                    Value::Object(members) => {
                        let fresh = if index == last { Value::Null } else { Value::Object(Map::new()) };
                        members.entry(name.clone()).or_insert(fresh)
                    }
                    Value::Array(items) => {
                        let position = name.parse::<usize>().ok().filter(|&position| position < items.len());
                        let position = position.ok_or_else(|| {
                            format!("field path {}: no element {name} in the array", self.text)
                        })?;
                        &mut items[position]
                    }
                    _ => {
                        return Err(format!(
                            "field path {}: `{name}` is inside a value that is not an object",
                            self.text
                        ));
                    }
                },
                Segment::Filter { member, field, value: wanted } => {
                    let Value::Object(members) = current else {
                        return Err(format!(
                            "field path {}: `{member}` is inside a value that is not an object",
                            self.text
                        ));
                    };
                    let array = members.entry(member.clone()).or_insert_with(|| Value::Array(Vec::new()));
                    if array.is_null() {
                        *array = Value::Array(Vec::new());
                    }
                    let Value::Array(items) = array else {
                        return Err(format!("field path {}: `{member}` is not an array", self.text));
                    };
                    let position = match items.iter().position(|item| matches(item, field, wanted)) {
                        Some(position) => position,
                        None => {
                            let mut element = Map::new();
                            element.insert(field.clone(), Value::String(wanted.clone()));
                            items.push(Value::Object(element));
                            items.len() - 1
                        }
                    };
                    &mut items[position]
                }
            };
            current = here;
        }
        *current = value;
        Ok(())
    }

    /// The path that a write of this path sends whole: up to and including the first array
    /// it goes into (APIs replace arrays whole), or the whole path. `/meta/email` is its own
    /// unit; `/meta/contact_info[type=email]/value` is sent as `/meta/contact_info`.
    pub fn unit(&self) -> FieldPath {
        let mut segments = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Member(name) => segments.push(Segment::Member(name.clone())),
                Segment::Filter { member, .. } => {
                    segments.push(Segment::Member(member.clone()));
                    break;
                }
            }
        }
        let text = segments
            .iter()
            .map(|segment| match segment {
                Segment::Member(name) => format!("/{}", name.replace('~', "~0").replace('/', "~1")),
                Segment::Filter { .. } => unreachable!("units hold members only"),
            })
            .collect();
        FieldPath { text, segments }
    }

    /// Copies this path's value from `source` into `target`, making what is missing on the
    /// way (a unit, into a request body).
    ///
    /// # Errors
    ///
    /// As `set`.
    pub fn copy(&self, source: &Value, target: &mut Value) -> Result<(), String> {
        self.set(target, self.get(source))
    }
}

/// Whether an array element is an object whose `field` holds `value` (compared as text).
fn matches(item: &Value, field: &str, value: &str) -> bool {
    match item.get(field) {
        Some(Value::String(text)) => text == value,
        Some(Value::Number(number)) => number.to_string() == value,
        Some(Value::Bool(flag)) => flag.to_string() == value,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(text: &str) -> FieldPath {
        FieldPath::parse(text).unwrap()
    }

    #[test]
    fn reads_members_filters_and_indexes_and_null_where_missing() {
        let record = json!({
            "id": 7,
            "title": {"raw": "Ann"},
            "meta": {"email": "a@b.nl", "contact_info": [
                {"type": "phone", "value": "010"}, {"type": "email", "value": "ann@club.nl"}
            ]},
            "a/b": {"~x": 1}
        });
        assert_eq!(path("/id").get(&record), json!(7));
        assert_eq!(path("id").get(&record), json!(7));
        assert_eq!(path("/title/raw").get(&record), json!("Ann"));
        assert_eq!(path("/meta/contact_info[type=email]/value").get(&record), json!("ann@club.nl"));
        assert_eq!(path("/meta/contact_info/0/value").get(&record), json!("010"));
        assert_eq!(path("/meta/contact_info[type=fax]/value").get(&record), Value::Null);
        assert_eq!(path("/meta/missing/deeper").get(&record), Value::Null);
        assert_eq!(path("/a~1b/~0x").get(&record), json!(1));
    }

    #[test]
    fn writes_update_the_matching_element_or_append_one() {
        let mut record = json!({"meta": {"contact_info": [{"type": "phone", "value": "010"}]}});
        path("/meta/contact_info[type=phone]/value").set(&mut record, json!("020")).unwrap();
        path("/meta/contact_info[type=email]/value").set(&mut record, json!("ann@club.nl")).unwrap();
        path("/meta/email").set(&mut record, json!("x@y.nl")).unwrap();
        path("/title").set(&mut record, json!("Ann")).unwrap();
        assert_eq!(
            record,
            json!({"meta": {"contact_info": [
                {"type": "phone", "value": "020"}, {"type": "email", "value": "ann@club.nl"}
            ], "email": "x@y.nl"}, "title": "Ann"})
        );
        let mut empty = Value::Null;
        path("/meta/contact_info[type=email]/value").set(&mut empty, json!("a@b.nl")).unwrap();
        assert_eq!(empty, json!({"meta": {"contact_info": [{"type": "email", "value": "a@b.nl"}]}}));
        let mut text = json!({"meta": "oops"});
        assert!(path("/meta/email").set(&mut text, json!(1)).unwrap_err().contains("not an object"));
    }

    #[test]
    fn an_empty_value_in_an_array_is_no_element() {
        let mut record = json!({"meta": {"contact_info": [
            {"type": "phone", "value": "010"}, {"type": "email", "value": "a@b.nl"}
        ]}});
        let email = path("/meta/contact_info[type=email]/value");
        assert!(email.has_filter() && !path("/meta/email").has_filter());
        email.remove_element(&mut record);
        assert_eq!(record, json!({"meta": {"contact_info": [{"type": "phone", "value": "010"}]}}));
        email.remove_element(&mut record);
        let mut bare = json!({"meta": {}});
        email.remove_element(&mut bare);
        assert_eq!(bare, json!({"meta": {}}));
        assert_eq!(email.first_member(), Some("meta"));
    }

    #[test]
    fn a_write_is_sent_as_the_array_it_goes_into() {
        assert_eq!(path("/meta/contact_info[type=email]/value").unit().as_str(), "/meta/contact_info");
        assert_eq!(path("/meta/email").unit().as_str(), "/meta/email");
        assert_eq!(path("email").unit().as_str(), "/email");
        let record = json!({"meta": {"contact_info": [{"type": "email", "value": "a"}], "other": 1}});
        let mut body = json!({});
        path("/meta/contact_info").copy(&record, &mut body).unwrap();
        assert_eq!(body, json!({"meta": {"contact_info": [{"type": "email", "value": "a"}]}}));
    }

    #[test]
    fn bad_paths_are_named() {
        assert!(FieldPath::parse("").unwrap_err().contains("empty"));
        assert!(FieldPath::parse("/a//b").unwrap_err().contains("empty segment"));
        assert!(FieldPath::parse("/a[type=email/value").unwrap_err().contains("closing"));
        assert!(FieldPath::parse("/a[type]/value").unwrap_err().contains("[field=value]"));
    }
}
