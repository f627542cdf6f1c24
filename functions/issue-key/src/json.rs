//! The API's JSON input: request bodies and queries, deserialized straight into domain types
//! (strict: unknown or repeated fields are errors). The answers' shapes are `crate::views`.

use crate::error::ApiError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use shared::domain::api_key::KeyEnv;
use shared::domain::customers::CustomerId;
use shared::domain::key_records::{KeyStatus, LimitOverrides};
use shared::domain::plans::{PlanId, Quota, RateLimit, is_stripe_id};
use shared::domain::time::UnixTime;
use shared::domain::usage::HISTORY_DAYS;
use std::collections::BTreeMap;

/// Management bodies are small; anything bigger is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Parses a JSON body into `T`, naming the offending field on error. An empty body (nothing,
/// or only JSON's whitespace) counts as `{}` where `empty_ok`.
pub fn parse_body<T: DeserializeOwned>(body: &[u8], empty_ok: bool) -> Result<T, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::BodyTooLarge(MAX_BODY_BYTES));
    }
    // JSON's four (RFC 8259, section 2): Rust's `is_ascii_whitespace` also takes a form feed,
    // which would let a body that is not JSON through as an empty one.
    let json_whitespace = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let body: &[u8] = if body.iter().all(json_whitespace) {
        if !empty_ok {
            return Err(ApiError::InvalidJson("the body is empty; send a JSON object".into()));
        }
        b"{}"
    } else {
        body
    };
    // Syntax first, then shape: a body is one JSON object (an array would otherwise fill the
    // fields in order), and a whole number written as a float (`679.0`) is the integer JSON
    // Schema says it is.
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut value = match serde_path_to_error::deserialize::<_, Unique>(&mut de) {
        Ok(Unique(value)) => value,
        Err(e) if e.inner().is_data() => return Err(field_error(e)),
        Err(e) => return Err(ApiError::InvalidJson(strip_position(&e.inner().to_string()))),
    };
    de.end().map_err(|e| ApiError::InvalidJson(strip_position(&e.to_string())))?;
    if !value.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    whole_floats_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        if e.inner().is_data() { field_error(e) } else { ApiError::InvalidJson(strip_position(&e.inner().to_string())) }
    })
}

/// Parses a query string into `T`, naming the offending parameter on error.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let message = e.inner().to_string();
        match message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
            Some(name) => ApiError::invalid(name, "unknown query parameter"),
            None => {
                let path = e.path().to_string();
                let named = ["missing field `", "duplicate field `"]
                    .iter()
                    .find_map(|prefix| message.strip_prefix(prefix))
                    .and_then(|m| m.split('`').next());
                match named {
                    Some(name) => ApiError::invalid(name, message.clone()),
                    None => ApiError::invalid(if path == "." { "query".to_owned() } else { path }, message),
                }
            }
        }
    })
}

/// A data error as a 422 naming the field. serde reports a missing or repeated field at its
/// parent; name the field itself.
fn field_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let message = strip_position(&e.inner().to_string());
    let path = e.path().to_string();
    let named = ["missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|m| m.split('`').next());
    let field = match named {
        Some(name) if path == "." => name.to_owned(),
        Some(name) => format!("{path}.{name}"),
        None if path == "." => "body".to_owned(),
        None => path,
    };
    ApiError::invalid(field, message)
}

/// A JSON value in which no object names a member twice (`{"name":"a","name":"b"}` is refused,
/// never "the last one wins"), as the typed bodies' derived deserializers refuse it.
struct Unique(serde_json::Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = vec![];
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if fields.contains_key(&name) {
                return Err(serde::de::Error::custom(format_args!("duplicate field `{name}`")));
            }
            let Unique(value) = map.next_value()?;
            fields.insert(name, value);
        }
        Ok(fields.into())
    }
}

/// Rewrites every float that is a whole number exactly representable as one (|x| <= 2^53)
/// as that integer; any other float stays a float, which an integer field then refuses.
fn whole_floats_as_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= EXACT) {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// A field that may be left out but not sent as `null` (PATCH fields that cannot be cleared).
fn not_null<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    match Option::<T>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom("must not be null (leave the field out to keep its value)")),
    }
}

/// Distinguishes "absent" (`None`) from "null" (`Some(None)`) in PATCH bodies.
fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    #[serde(default)]
    pub id: Option<PlanId>,
    pub name: String,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub quota: Option<Quota>,
    #[serde(default)]
    pub stripe_price_ids: Vec<String>,
    #[serde(default)]
    pub meter_event_name: Option<String>,
    #[serde(default)]
    pub max_keys: Option<u64>,
}

/// An RFC 3339 timestamp in a body (`2027-01-31T00:00:00Z`), within years 0000-9999 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Timestamp(pub UnixTime);

impl TryFrom<String> for Timestamp {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        UnixTime::parse_rfc3339(&s)
            .map(Timestamp)
            .map_err(|_| "must be an RFC 3339 timestamp, e.g. 2027-01-31T00:00:00Z")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyInput {
    pub customer_id: CustomerId,
    #[serde(default)]
    pub plan_id: Option<PlanId>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub env: Option<KeyEnv>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub quota: Option<Quota>,
}

/// The statuses a PATCH may set: revoking is its own request, because it cannot be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SettableStatus(pub KeyStatus);

impl TryFrom<String> for SettableStatus {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match KeyStatus::parse(&s) {
            Some(KeyStatus::Revoked) => Err("revoke a key with POST /v1/keys/{id}/revoke"),
            Some(status) => Ok(SettableStatus(status)),
            None => Err("must be active or disabled"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchKeyInput {
    #[serde(default, deserialize_with = "double_option")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "not_null")]
    pub status: Option<SettableStatus>,
    #[serde(default, deserialize_with = "double_option")]
    pub expires_at: Option<Option<Timestamp>>,
    #[serde(default, deserialize_with = "double_option")]
    pub plan_id: Option<Option<PlanId>>,
    #[serde(default, deserialize_with = "not_null")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub rate_limit: Option<Option<RateLimit>>,
    #[serde(default, deserialize_with = "double_option")]
    pub quota: Option<Option<Quota>>,
}

/// `POST /v1/me/keys`: a customer names its key; everything else is its plan's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeCreateKeyInput {
    #[serde(default)]
    pub name: Option<String>,
}

/// `PATCH /v1/me/keys/{id}`: a name, and `active` or `disabled`; nothing else is a customer's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MePatchKeyInput {
    #[serde(default, deserialize_with = "not_null")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    pub status: Option<SettableStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    #[serde(default)]
    pub grace_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyInput {}

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 100;

/// `GET /v1/keys`'s filters and page.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListKeysQuery {
    pub customer_id: Option<CustomerId>,
    pub plan_id: Option<PlanId>,
    pub status: Option<StatusFilter>,
    pub limit: Option<PageSize>,
    pub cursor: Option<String>,
}

/// `GET /v1/me/keys`: the customer filter is the caller itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeKeysQuery {
    pub status: Option<StatusFilter>,
    pub limit: Option<PageSize>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub struct StatusFilter(pub KeyStatus);

impl TryFrom<String> for StatusFilter {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        KeyStatus::parse(&s).map(StatusFilter).ok_or("must be active, disabled or revoked")
    }
}

/// A page size, 1..=[`MAX_PAGE`].
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub struct PageSize(pub usize);

impl TryFrom<String> for PageSize {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        integer_in(&s, 1..=MAX_PAGE).map(PageSize)
    }
}

/// A whole number in `range`, from a query parameter.
fn integer_in<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    s: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, String> {
    s.parse()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| format!("must be an integer {}..={}", range.start(), range.end()))
}

/// `?days=N` of a usage history (default 30).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub days: Option<Days>,
}

impl HistoryQuery {
    pub fn days(&self) -> i64 {
        self.days.map_or(30, |d| d.0)
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub struct Days(pub i64);

impl TryFrom<String> for Days {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        integer_in(&s, 1..=HISTORY_DAYS).map(Days)
    }
}

/// `GET /v1/claim?session_id=cs_...`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimQuery {
    pub session_id: SessionId,
}

/// A Checkout session id (`cs_...`), as Stripe's success URL carries it.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct SessionId(pub String);

impl TryFrom<String> for SessionId {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if is_stripe_id(&s, "cs_") { Ok(SessionId(s)) } else { Err("must be a Checkout session id (cs_...)") }
    }
}

/// Overrides as a key stores them, from the two optional body fields.
pub fn overrides(rate_limit: Option<RateLimit>, quota: Option<Quota>) -> LimitOverrides {
    LimitOverrides { rate_limit, quota }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> (u16, String) {
        match parse_body::<PlanInput>(body.as_bytes(), false) {
            Err(ApiError::Invalid(v)) => (422, v.field),
            Err(e) => (e.status(), e.code().to_owned()),
            Ok(_) => (200, String::new()),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err(r#"{"name":"x","colour":1}"#), (422, "colour".into()));
        assert_eq!(err(r#"{"name":"x","rate_limit":{"limit":-1,"window_s":1}}"#), (422, "rate_limit.limit".into()));
        assert_eq!(err(r#"{"name":"x","rate_limit":{"limit":1}}"#), (422, "rate_limit.window_s".into()));
        assert_eq!(err(r#"{"name":5}"#), (422, "name".into()));
        assert_eq!(err(r#"{}"#), (422, "name".into()));
        assert_eq!(err(r#"{"name":"x""#), (400, "invalid_json".into()));
        assert_eq!(err(r#"{"name":"x"} trailing"#), (400, "invalid_json".into()));
        assert_eq!(err(""), (400, "invalid_json".into()));
        assert_eq!(err(&format!(r#"{{"name":"{}"}}"#, "x".repeat(MAX_BODY_BYTES))), (400, "body_too_large".into()));
        assert_eq!(err(r#"{"name":"x","quota":{"limit":5,"period":"week"}}"#), (422, "quota.period".into()));
    }

    #[test]
    fn patch_tells_null_from_absent() {
        let p: PatchKeyInput = parse_body(br#"{"name":null,"plan_id":"pro"}"#, false).unwrap();
        assert_eq!(p.name, Some(None));
        assert_eq!(p.plan_id, Some(Some(PlanId::parse("pro").unwrap())));
        assert!(p.expires_at.is_none());
        // Fields that cannot be cleared refuse null instead of ignoring it.
        for body in [r#"{"status":null}"#, r#"{"metadata":null}"#] {
            match parse_body::<PatchKeyInput>(body.as_bytes(), false) {
                Err(ApiError::Invalid(v)) => assert!(body.contains(&v.field), "{body}: {}", v.field),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_body_is_one_object_and_whole_floats_are_integers() {
        let p: PlanInput = parse_body(br#"{"name":"x","rate_limit":{"limit":679.0,"window_s":6e1}}"#, false).unwrap();
        assert_eq!(p.rate_limit.map(|r| (r.limit, r.window_s)), Some((679, 60)));
        assert_eq!(err(r#"{"name":"x","rate_limit":{"limit":679.5,"window_s":60}}"#), (422, "rate_limit.limit".into()));
        // Beyond 2^53 a float is not an exact integer: refused, never rounded.
        assert_eq!(err(r#"{"name":"x","rate_limit":{"limit":1e17,"window_s":60}}"#), (422, "rate_limit.limit".into()));
        assert_eq!(err(r#"["p","x"]"#), (422, "body".into()));
        assert_eq!(err(r#""x""#), (422, "body".into()));
        assert_eq!(err("null"), (422, "body".into()));
    }

    #[test]
    fn a_member_named_twice_is_refused_never_last_one_wins() {
        assert_eq!(err(r#"{"name":"a","name":"b"}"#), (422, "name".into()));
        assert_eq!(
            err(r#"{"name":"a","rate_limit":{"limit":1,"limit":2,"window_s":60}}"#),
            (422, "rate_limit.limit".into())
        );
        // Inside free-form maps too: metadata keys are unique.
        let dup = r#"{"customer_id":"acme","metadata":{"a":"1","a":"2"}}"#;
        assert!(
            matches!(parse_body::<CreateKeyInput>(dup.as_bytes(), false), Err(ApiError::Invalid(v)) if v.field == "metadata.a")
        );
        assert_eq!(err(r#"{"name":"x"} {"#), (400, "invalid_json".into()));
    }
}
