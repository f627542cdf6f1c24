//! Update and condition expressions: placeholders for every name and value, and the
//! SET / REMOVE / ADD clauses of an update.

use super::items::n;
use crate::store::schema::VER;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

/// Collects placeholder names and values for an expression, so attribute names never clash
/// with DynamoDB's reserved words and values are never spliced into expression text.
#[derive(Default)]
pub(super) struct Expr {
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

impl Expr {
    pub(super) fn name(&mut self, attr: &str) -> String {
        if let Some((k, _)) = self.names.iter().find(|(_, v)| v.as_str() == attr) {
            return k.clone();
        }
        let k = format!("#n{}", self.names.len());
        self.names.insert(k.clone(), attr.to_owned());
        k
    }

    pub(super) fn value(&mut self, v: AttributeValue) -> String {
        if let Some((k, _)) = self.values.iter().find(|(_, existing)| **existing == v) {
            return k.clone();
        }
        let k = format!(":v{}", self.values.len());
        self.values.insert(k.clone(), v);
        k
    }

    /// `SET` each field that has a value and `REMOVE` each that has none, and move the item's
    /// `ver` from `ver` to `ver + 1`. Returns the assignments and the condition on `ver`.
    pub(super) fn versioned<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a str, Option<AttributeValue>)>,
        ver: u64,
    ) -> (Assignments, String) {
        let mut a = Assignments::default();
        for (name, value) in fields {
            let attr = self.name(name);
            match value {
                Some(v) => a.sets.push(format!("{attr} = {}", self.value(v))),
                None => a.removes.push(attr),
            }
        }
        let vn = self.name(VER);
        a.sets.push(format!("{vn} = {}", self.value(n(ver + 1))));
        let cond = format!("{vn} = {}", self.value(n(ver)));
        (a, cond)
    }
}

/// The clauses of an update expression.
#[derive(Default)]
pub(super) struct Assignments {
    pub(super) sets: Vec<String>,
    pub(super) removes: Vec<String>,
    pub(super) adds: Vec<String>,
}

impl Assignments {
    pub(super) fn expression(&self) -> String {
        let mut out = vec![];
        for (verb, parts) in [("SET", &self.sets), ("REMOVE", &self.removes), ("ADD", &self.adds)] {
            if !parts.is_empty() {
                out.push(format!("{verb} {}", parts.join(", ")));
            }
        }
        out.join(" ")
    }
}
