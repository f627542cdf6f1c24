//! Which scope a request to the protected API needs: the operator's map from routes (method
//! and path pattern) to scopes (`TOLLGATE_SCOPES`), and the rule that a key must hold every
//! scope of every route pattern a request matches.
//!
//! The map is a JSON object, `{"GET /pets/*": "pets:read", "POST /pets": "pets:write",
//! "* /admin/**": ["admin"]}`:
//! - the method is one HTTP method, or `*` / `ANY` for all;
//! - the path is matched segment by segment: a literal matches itself, `*` or `{name}` one
//!   segment, a trailing `**` or `{name+}` any number of segments (none included);
//! - the value is one scope or a list of them.
//!
//! Every matching pattern applies, so a general rule cannot be sidestepped by a more specific
//! one, and the order of the map does not matter. A `GET` rule covers `HEAD` too (frameworks
//! answer HEAD with the GET handler). Paths are compared percent-decoded, with empty, `.` and
//! `..` segments resolved, and case-sensitively. A path that upstreams disagree about (a
//! segment holding an encoded `/`, a `\`, a `;` parameter, a `%` left after decoding, or a
//! control character) is not guessed at: [`AmbiguousPath`], which the authorizer refuses.

use super::key_records::validate_scopes;
use std::borrow::Cow;

/// `TOLLGATE_SCOPES`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeMap {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// Upper-case; `None` for any method.
    method: Option<String>,
    segments: Vec<Segment>,
    scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

/// At most this many routes in a map.
pub const MAX_RULES: usize = 200;

impl ScopeMap {
    /// Parses the JSON form; the error names the offending route.
    pub fn parse(json: &str) -> Result<Self, String> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
            .map_err(|e| format!("expected a JSON object of \"METHOD /path\": scope: {e}"))?;
        if map.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} routes"));
        }
        let rules = map.iter().map(|(route, scopes)| Rule::parse(route, scopes)).collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every scope a request to `method` `path` needs (none when no route matches).
    pub fn required(&self, method: &str, path: &str) -> Result<Vec<String>, AmbiguousPath> {
        if self.rules.is_empty() {
            return Ok(vec![]);
        }
        let segments = normalize(path)?;
        let mut needed: Vec<String> = vec![];
        for rule in self.rules.iter().filter(|r| r.matches(method, &segments)) {
            for scope in &rule.scopes {
                if !needed.contains(scope) {
                    needed.push(scope.clone());
                }
            }
        }
        Ok(needed)
    }
}

/// A path whose segments upstreams read differently (docs/authorizer.md, "Scopes"): no scope decision is
/// made for it, so a key cannot reach a scoped route through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousPath;

impl Rule {
    fn parse(route: &str, scopes: &serde_json::Value) -> Result<Self, String> {
        let err = |m: &str| format!("route `{route}`: {m}");
        let (method, path) = route.trim().split_once(' ').ok_or_else(|| err("expected \"METHOD /path\""))?;
        let method = match method.to_ascii_uppercase().as_str() {
            "*" | "ANY" => None,
            m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Some(m.to_owned()),
            _ => return Err(err("the method must be an HTTP method, `*` or `ANY`")),
        };
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(err("the path must start with `/`"));
        }
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let rest = *part == "**" || (part.starts_with('{') && part.ends_with("+}"));
            if rest && i + 1 != parts.len() {
                return Err(err("`**` (or `{name+}`) may only end a path"));
            }
            segments.push(if rest {
                Segment::Rest
            } else if *part == "*" || (part.starts_with('{') && part.ends_with('}')) {
                Segment::One
            } else {
                Segment::Literal(decode(part).into_owned())
            });
        }
        let scopes: Vec<String> = match scopes {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| err("scopes must be strings")))
                .collect::<Result<_, _>>()?,
            _ => return Err(err("the value must be a scope or a list of scopes")),
        };
        if scopes.is_empty() {
            return Err(err("name at least one scope"));
        }
        validate_scopes(&scopes).map_err(|e| err(&e.message))?;
        Ok(Self { method, segments, scopes })
    }

    fn matches(&self, method: &str, path: &[Cow<'_, str>]) -> bool {
        let method_matches =
            |m: &str| m.eq_ignore_ascii_case(method) || (m == "GET" && method.eq_ignore_ascii_case("HEAD"));
        if self.method.as_deref().is_some_and(|m| !method_matches(m)) {
            return false;
        }
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Rest => return true,
                Segment::One if i < path.len() => {}
                Segment::Literal(l) if path.get(i).is_some_and(|p| p == l) => {}
                _ => return false,
            }
            i += 1;
        }
        i == path.len()
    }
}

/// The path's segments as an upstream resolves them: percent-decoded, empty and `.` segments
/// dropped, `..` removing the one before (never above the root); ambiguous where upstreams
/// disagree.
fn normalize(path: &str) -> Result<Vec<Cow<'_, str>>, AmbiguousPath> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut out: Vec<Cow<'_, str>> = vec![];
    for raw in path.split('/') {
        let seg = decode(raw);
        if seg.chars().any(|c| matches!(c, '/' | '\\' | ';' | '%') || c.is_control()) {
            return Err(AmbiguousPath);
        }
        match seg.as_ref() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(seg),
        }
    }
    Ok(out)
}

fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let mut bytes = Vec::with_capacity(s.len());
    let raw = s.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (raw[i], raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                bytes.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
}

/// The scopes of `needed` that `held` lacks.
pub fn missing<'a>(needed: &'a [String], held: &[String]) -> Vec<&'a str> {
    needed.iter().filter(|s| !held.contains(s)).map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ScopeMap {
        ScopeMap::parse(
            r#"{"GET /pets/*": "pets:read", "POST /pets": ["pets:write"], "* /admin/**": "admin",
                "DELETE /pets/{id}": ["pets:write", "pets:delete"]}"#,
        )
        .unwrap()
    }

    #[test]
    fn every_matching_route_applies() {
        let m = map();
        let req = |method: &str, path: &str| m.required(method, path).unwrap();
        assert_eq!(req("GET", "/pets/7"), ["pets:read"]);
        assert_eq!(req("get", "/pets/7"), ["pets:read"], "methods compare without case");
        assert_eq!(req("HEAD", "/pets/7"), ["pets:read"], "a GET rule covers HEAD");
        assert_eq!(req("POST", "/pets"), ["pets:write"]);
        assert_eq!(req("DELETE", "/pets/7"), ["pets:write", "pets:delete"]);
        assert!(req("GET", "/pets").is_empty(), "`*` is exactly one segment");
        assert!(req("GET", "/pets/7/toys").is_empty());
        assert_eq!(req("PUT", "/admin"), ["admin"], "`**` matches no segment too");
        assert_eq!(req("GET", "/admin/users/1"), ["admin"]);
        assert!(req("GET", "/administrator").is_empty());
        assert!(ScopeMap::default().required("GET", "/anything").unwrap().is_empty());
        assert_eq!(ScopeMap::default().required("GET", "/a%2Fb"), Ok(vec![]), "no map, nothing to decide");
    }

    #[test]
    fn paths_are_compared_as_the_upstream_resolves_them() {
        let m = map();
        for sneaky in ["/%61dmin/x", "//admin", "/public/../admin", "/./admin/", "/admin?x=1", "/pets/../admin"] {
            assert_eq!(m.required("GET", sneaky).unwrap(), ["admin"], "{sneaky}");
        }
        assert!(
            m.required("GET", "/../../pets").unwrap().is_empty(),
            "never above the root: /pets has no rule for GET"
        );
        // What upstreams split, strip or decode again differently is not guessed at.
        for ambiguous in [
            "/admin%2Fusers",
            "/x/admin%2fusers",
            "/admin;x/users",
            "/admin\\users",
            "/admin%5Cusers",
            "/a%252Fb",
            "/a%00b",
        ] {
            assert_eq!(m.required("GET", ambiguous), Err(AmbiguousPath), "{ambiguous}");
        }
    }

    #[test]
    fn bad_maps_are_refused_naming_the_route() {
        for bad in [
            r#"["GET /x"]"#,
            r#"{"GET": "s"}"#,
            r#"{"GET x": "s"}"#,
            r#"{"G3T /x": "s"}"#,
            r#"{"GET /x/**/y": "s"}"#,
            r#"{"GET /x": 1}"#,
            r#"{"GET /x": []}"#,
            r#"{"GET /x": "has space"}"#,
        ] {
            assert!(ScopeMap::parse(bad).is_err(), "{bad}");
        }
        assert!(ScopeMap::parse(r#"{"GET /x/**/y": "s"}"#).unwrap_err().contains("GET /x/**/y"));
    }

    #[test]
    fn what_a_key_lacks() {
        let needed = vec!["a".to_string(), "b".to_string()];
        assert_eq!(missing(&needed, &["b".into()]), ["a"]);
        assert!(missing(&needed, &["a".into(), "b".into(), "c".into()]).is_empty());
    }
}
