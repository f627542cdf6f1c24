//! The credentials a client presented, from its request headers.

/// The key a client presented: `x-api-key`, else `Authorization: Bearer <key>`. Header names
/// are matched case-insensitively, as HTTP requires.
pub fn presented_key<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<&'a str> {
    let mut bearer = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("x-api-key") {
            let v = value.trim();
            if !v.is_empty() {
                return Some(v);
            }
        } else if name.eq_ignore_ascii_case("authorization") && bearer.is_none() {
            bearer = bearer_token(value);
        }
    }
    bearer
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
