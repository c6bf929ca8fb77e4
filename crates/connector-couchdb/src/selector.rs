//! Mango selectors, read once from the configuration and evaluated here against each document:
//! `_all_docs` and `_changes` cannot filter by a selector without losing deletes (a tombstone
//! matches no selector), so the connector lists everything and keeps what matches.
//!
//! Supported: fields by dotted name (`\.` for a dot inside a name) or as nested objects, an
//! implicit `$eq`, `$eq`, `$ne`, `$gt`, `$gte`, `$lt`, `$lte`, `$in`, `$nin`, `$exists`,
//! `$type`, `$size`, `$all`, `$mod`, `$regex`, `$beginsWith`, `$elemMatch`, `$allMatch`, and the
//! combinations `$and`, `$or`, `$nor`, `$not`. Values compare in CouchDB's collation order
//! (null, false, true, numbers, text, arrays, objects); text compares by code point, not by
//! CouchDB's ICU collation, which only matters to `$gt`-style comparisons of text.

use std::cmp::Ordering;

use serde_json::{Map, Value as Json};

/// A selector, checked.
#[derive(Clone, Debug)]
pub(crate) enum Selector {
    /// Every part holds (an object's members; `$and`).
    And(Vec<Selector>),
    /// Some part holds.
    Or(Vec<Selector>),
    /// No part holds.
    Nor(Vec<Selector>),
    /// The part does not hold.
    Not(Box<Selector>),
    /// A condition on the value at a field (its names, outermost first).
    Field(Vec<String>, Condition),
}

/// A condition on one field's value (absent when the document has no such field).
#[derive(Clone, Debug)]
pub(crate) enum Condition {
    Eq(Json),
    Ne(Json),
    Compare(Ordering, bool, Json),
    In(Vec<Json>),
    Nin(Vec<Json>),
    Exists(bool),
    Type(String),
    Size(usize),
    All(Vec<Json>),
    Mod(i64, i64),
    Regex(regex::Regex),
    BeginsWith(String),
    ElemMatch(Box<Selector>),
    AllMatch(Box<Selector>),
}

impl Selector {
    /// Reads a selector from its JSON; the error says what is wrong and where, as a dotted
    /// path of the selector's own keys.
    pub(crate) fn parse(selector: &Map<String, Json>) -> Result<Selector, String> {
        let selector = parse_object(selector, &[])?;
        selector.check_fields()?;
        Ok(selector)
    }

    /// Refuses an operator outside a field (only inside `$elemMatch` and `$allMatch` does one
    /// apply to the value itself).
    fn check_fields(&self) -> Result<(), String> {
        match self {
            Selector::And(parts) | Selector::Or(parts) | Selector::Nor(parts) => {
                parts.iter().try_for_each(Selector::check_fields)
            }
            Selector::Not(part) => part.check_fields(),
            Selector::Field(names, _) if names.is_empty() => {
                Err("an operator outside a field (only `$and`, `$or`, `$nor` and `$not` stand alone)".into())
            }
            Selector::Field(..) => Ok(()),
        }
    }

    /// The selector `field == value`, for `type_field` and `type_value`.
    pub(crate) fn equals(field: Vec<String>, value: Json) -> Selector {
        Selector::Field(field, Condition::Eq(value))
    }

    /// Whether `document` matches.
    pub(crate) fn matches(&self, document: &Json) -> bool {
        match self {
            Selector::And(parts) => parts.iter().all(|part| part.matches(document)),
            Selector::Or(parts) => parts.iter().any(|part| part.matches(document)),
            Selector::Nor(parts) => !parts.iter().any(|part| part.matches(document)),
            Selector::Not(part) => !part.matches(document),
            Selector::Field(names, condition) => condition.holds(field(document, names)),
        }
    }

    /// The fields this selector requires to hold one value (a member or `$eq` reached through
    /// `$and` only), which a create fills in so that the new document matches.
    pub(crate) fn required_values(&self) -> Vec<(Vec<String>, Json)> {
        match self {
            Selector::And(parts) => parts.iter().flat_map(Selector::required_values).collect(),
            Selector::Field(names, Condition::Eq(value)) => vec![(names.clone(), value.clone())],
            _ => Vec::new(),
        }
    }
}

impl Condition {
    fn holds(&self, value: Option<&Json>) -> bool {
        let Some(value) = value else {
            // CouchDB: every operator but `$exists` needs the field.
            return matches!(self, Condition::Exists(false));
        };
        match self {
            Condition::Eq(wanted) => collate(value, wanted) == Ordering::Equal,
            Condition::Ne(unwanted) => collate(value, unwanted) != Ordering::Equal,
            Condition::Compare(ordering, or_equal, bound) => {
                // Only values of the same type compare, as CouchDB's Mango does.
                let found = collate(value, bound);
                type_rank(value) == type_rank(bound) && (found == *ordering || (*or_equal && found.is_eq()))
            }
            Condition::In(list) => in_list(value, list),
            Condition::Nin(list) => !in_list(value, list),
            Condition::Exists(exists) => *exists,
            Condition::Type(name) => type_name(value) == name,
            Condition::Size(size) => value.as_array().is_some_and(|items| items.len() == *size),
            Condition::All(wanted) => value.as_array().is_some_and(|items| {
                wanted.iter().all(|want| items.iter().any(|item| collate(item, want).is_eq()))
            }),
            Condition::Mod(divisor, remainder) => {
                value.as_i64().is_some_and(|number| number % divisor == *remainder)
            }
            Condition::Regex(pattern) => value.as_str().is_some_and(|text| pattern.is_match(text)),
            Condition::BeginsWith(prefix) => {
                value.as_str().is_some_and(|text| text.starts_with(prefix.as_str()))
            }
            Condition::ElemMatch(selector) => {
                value.as_array().is_some_and(|items| items.iter().any(|item| selector.matches(item)))
            }
            Condition::AllMatch(selector) => value
                .as_array()
                .is_some_and(|items| !items.is_empty() && items.iter().all(|item| selector.matches(item))),
        }
    }
}

/// Whether `value` is in `list`, or, for an array, one of its items is.
fn in_list(value: &Json, list: &[Json]) -> bool {
    let one = |value: &Json| list.iter().any(|item| collate(value, item).is_eq());
    one(value) || value.as_array().is_some_and(|items| items.iter().any(one))
}

/// The value at `names` in `document`: object members by name, array items by index.
fn field<'a>(document: &'a Json, names: &[String]) -> Option<&'a Json> {
    names.iter().try_fold(document, |value, name| match value {
        Json::Object(members) => members.get(name),
        Json::Array(items) => name.parse::<usize>().ok().and_then(|index| items.get(index)),
        _ => None,
    })
}

/// Splits a Mango field name at its dots (not at `\.`).
pub(crate) fn split_field(name: &str) -> Vec<String> {
    let mut names = vec![String::new()];
    let mut chars = name.chars();
    while let Some(char) = chars.next() {
        match char {
            '\\' => match chars.next() {
                Some(escaped) => names.last_mut().expect("one name").push(escaped),
                None => names.last_mut().expect("one name").push('\\'),
            },
            '.' => names.push(String::new()),
            other => names.last_mut().expect("one name").push(other),
        }
    }
    names
}

/// A Mango field name for `names`: joined by dots, a dot inside a name escaped.
pub(crate) fn join_field(names: &[String]) -> String {
    names.iter().map(|name| name.replace('\\', "\\\\").replace('.', "\\.")).collect::<Vec<_>>().join(".")
}

fn parse_object(object: &Map<String, Json>, field: &[String]) -> Result<Selector, String> {
    let mut parts = Vec::new();
    for (key, value) in object {
        let at = |problem: String| format!("`{key}`: {problem}");
        if key.starts_with('$') {
            parts.push(parse_operator(key, value, field).map_err(
                |problem| match problem.starts_with('`') {
                    true => problem,
                    false => format!("`{key}` {problem}"),
                },
            )?);
        } else {
            let mut names = field.to_vec();
            names.extend(split_field(key));
            if names.iter().any(String::is_empty) {
                return Err(at("a field name with an empty part".into()));
            }
            parts.push(parse_value(value, &names).map_err(at)?);
        }
    }
    Ok(if parts.len() == 1 { parts.remove(0) } else { Selector::And(parts) })
}

/// The selector for `value` at a field: an object of operators or nested fields, or a value it
/// must equal.
fn parse_value(value: &Json, field: &[String]) -> Result<Selector, String> {
    match value {
        Json::Object(object) => parse_object(object, field),
        _ if field.is_empty() => Err("takes a selector".to_string()),
        other => Ok(Selector::Field(field.to_vec(), Condition::Eq(other.clone()))),
    }
}

fn parse_operator(operator: &str, argument: &Json, field: &[String]) -> Result<Selector, String> {
    let selectors = |argument: &Json| -> Result<Vec<Selector>, String> {
        let items = argument.as_array().ok_or("takes an array of selectors")?;
        items
            .iter()
            .map(|item| match item {
                Json::Object(object) => parse_object(object, field),
                _ => Err("takes an array of selectors".to_string()),
            })
            .collect()
    };
    let list = |argument: &Json| argument.as_array().cloned().ok_or_else(|| "takes an array".to_string());
    let sub_selector = |argument: &Json| match argument {
        Json::Object(object) => parse_object(object, &[]).map(Box::new),
        _ => Err("takes a selector".to_string()),
    };
    let condition = match operator {
        "$and" => return selectors(argument).map(Selector::And),
        "$or" => return selectors(argument).map(Selector::Or),
        "$nor" => return selectors(argument).map(Selector::Nor),
        "$not" => return parse_value(argument, field).map(|inner| Selector::Not(Box::new(inner))),
        "$eq" => Condition::Eq(argument.clone()),
        "$ne" => Condition::Ne(argument.clone()),
        "$gt" => Condition::Compare(Ordering::Greater, false, argument.clone()),
        "$gte" => Condition::Compare(Ordering::Greater, true, argument.clone()),
        "$lt" => Condition::Compare(Ordering::Less, false, argument.clone()),
        "$lte" => Condition::Compare(Ordering::Less, true, argument.clone()),
        "$in" => Condition::In(list(argument)?),
        "$nin" => Condition::Nin(list(argument)?),
        "$all" => Condition::All(list(argument)?),
        "$exists" => Condition::Exists(argument.as_bool().ok_or("takes true or false")?),
        "$type" => {
            let name = argument.as_str().unwrap_or_default();
            if !["null", "boolean", "number", "string", "array", "object"].contains(&name) {
                return Err("takes null, boolean, number, string, array or object".into());
            }
            Condition::Type(name.to_string())
        }
        "$size" => Condition::Size(
            argument.as_u64().and_then(|size| usize::try_from(size).ok()).ok_or("takes a whole number")?,
        ),
        "$mod" => match argument.as_array().map(Vec::as_slice) {
            Some([divisor, remainder]) => match (divisor.as_i64(), remainder.as_i64()) {
                (Some(divisor), Some(remainder)) if divisor != 0 => Condition::Mod(divisor, remainder),
                _ => return Err("takes [divisor, remainder], whole numbers, the divisor not 0".into()),
            },
            _ => return Err("takes [divisor, remainder]".into()),
        },
        "$regex" => {
            let pattern = argument.as_str().ok_or("takes a regular expression as text")?;
            Condition::Regex(
                regex::Regex::new(pattern)
                    .map_err(|_| format!("holds {pattern:?}, not a regular expression"))?,
            )
        }
        "$beginsWith" => Condition::BeginsWith(argument.as_str().ok_or("takes text")?.to_string()),
        "$elemMatch" => Condition::ElemMatch(sub_selector(argument)?),
        "$allMatch" => Condition::AllMatch(sub_selector(argument)?),
        _ => return Err("is not a Mango operator this connector evaluates".into()),
    };
    Ok(Selector::Field(field.to_vec(), condition))
}

/// The rank of a value's type in CouchDB's collation.
fn type_rank(value: &Json) -> u8 {
    match value {
        Json::Null => 0,
        Json::Bool(false) => 1,
        Json::Bool(true) => 2,
        Json::Number(_) => 3,
        Json::String(_) => 4,
        Json::Array(_) => 5,
        Json::Object(_) => 6,
    }
}

fn type_name(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// Two values in CouchDB's collation order (text by code point).
pub(crate) fn collate(left: &Json, right: &Json) -> Ordering {
    match (left, right) {
        (Json::Number(a), Json::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
            a.partial_cmp(&b).unwrap_or(Ordering::Equal)
        }
        (Json::String(a), Json::String(b)) => a.cmp(b),
        (Json::Array(a), Json::Array(b)) => a
            .iter()
            .zip(b)
            .map(|(a, b)| collate(a, b))
            .find(|order| order.is_ne())
            .unwrap_or(a.len().cmp(&b.len())),
        (Json::Object(a), Json::Object(b)) => a
            .iter()
            .zip(b)
            .map(|((ka, va), (kb, vb))| ka.cmp(kb).then_with(|| collate(va, vb)))
            .find(|order| order.is_ne())
            .unwrap_or(a.len().cmp(&b.len())),
        _ => type_rank(left).cmp(&type_rank(right)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selector(value: Json) -> Selector {
        Selector::parse(value.as_object().unwrap()).unwrap()
    }

    #[test]
    fn members_and_operators_match_as_couchdb_does() {
        let member = json!({
            "type": "member", "name": { "first": "Zoë", "last": "de Vries" }, "age": 34,
            "teams": ["JO11-1", "Veteranen"], "e.mail": "zoe@example.nl"
        });
        for (wanted, matches) in [
            (json!({ "type": "member" }), true),
            (json!({ "type": "team" }), false),
            (json!({ "name.last": "de Vries" }), true),
            (json!({ "name": { "first": { "$beginsWith": "Zo" } } }), true),
            (json!({ "age": { "$gte": 18, "$lt": 65 } }), true),
            (json!({ "age": { "$gt": "18" } }), false),
            (json!({ "teams": { "$all": ["Veteranen"] }, "teams.0": "JO11-1" }), true),
            (json!({ "teams": { "$in": ["Veteranen", "Dames 1"] } }), true),
            (json!({ "phone": { "$exists": false } }), true),
            (json!({ "phone": { "$ne": "x" } }), false),
            (json!({ "e\\.mail": { "$regex": "@example\\.nl$" } }), true),
            (json!({ "$or": [{ "type": "team" }, { "age": { "$mod": [2, 0] } }] }), true),
            (json!({ "$nor": [{ "type": "member" }] }), false),
            (json!({ "type": { "$not": { "$eq": "team" } } }), true),
            (json!({ "teams": { "$elemMatch": { "$eq": "Veteranen" } } }), true),
            (json!({ "teams": { "$size": 3 } }), false),
            (json!({}), true),
        ] {
            assert_eq!(selector(wanted.clone()).matches(&member), matches, "{wanted}");
        }
    }

    #[test]
    fn unknown_operators_and_misplaced_ones_are_refused_with_their_place() {
        for (wrong, said) in [
            (json!({ "age": { "$between": [1, 2] } }), "`age`: `$between` is not a Mango operator"),
            (json!({ "$gt": 3 }), "an operator outside a field"),
            (json!({ "$and": { "a": 1 } }), "`$and` takes an array"),
            (json!({ "name": { "$regex": "(" } }), "`name`: `$regex` holds \"(\", not a regular"),
        ] {
            let error = Selector::parse(wrong.as_object().unwrap()).unwrap_err();
            assert!(error.starts_with(said), "{wrong}: {error}");
        }
    }

    #[test]
    fn field_names_split_at_unescaped_dots_and_join_back() {
        assert_eq!(split_field("a.b\\.c"), ["a", "b.c"]);
        assert_eq!(join_field(&["a".into(), "b.c".into()]), "a.b\\.c");
        let mut required = selector(json!({
            "type": "member",
            "club": { "$eq": "VV Oranje" },
            "age": { "$gt": 3 },
            "$and": [{ "meta.kind\\.v": 2 }],
        }))
        .required_values();
        required.sort_by(|left, right| left.0.cmp(&right.0));
        let club = (vec!["club".to_string()], json!("VV Oranje"));
        let kind = (vec!["meta".to_string(), "kind.v".to_string()], json!(2));
        assert_eq!(required, [club, kind, (vec!["type".to_string()], json!("member"))]);
    }
}
