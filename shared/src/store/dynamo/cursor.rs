//! Listing cursors: the index position after the last item returned, opaque to callers and
//! valid only for the listing that issued it.

use super::Item;
use super::items::s;
use crate::domain::api_key::KeyId;
use crate::domain::key_records::KeyRecord;
use crate::store::StoreError;
use crate::store::StoreResult;
use crate::store::schema::*;
use base64::Engine as _;
use std::collections::BTreeMap;

pub(super) fn items_cursor(
    items: &[KeyRecord],
    pk_attr: &str,
    sk_attr: &str,
    pk_value: &str,
) -> BTreeMap<String, String> {
    let last = items.last().map(|r| r.key_id.as_str().to_owned()).unwrap_or_default();
    BTreeMap::from([
        (PK.to_owned(), key_pk(&last)),
        (SK.to_owned(), KEY_SK.to_owned()),
        (pk_attr.to_owned(), pk_value.to_owned()),
        (sk_attr.to_owned(), last),
    ])
}

pub(super) fn encode_cursor(key: &BTreeMap<String, String>) -> String {
    let json = serde_json::to_vec(key).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// A cursor is only valid for the listing that issued it: same index, same partition.
pub(super) fn decode_cursor(raw: &str, pk_attr: &str, sk_attr: &str, pk_value: &str) -> StoreResult<Item> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw).map_err(|_| StoreError::InvalidCursor)?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidCursor)?;
    let expected = [PK, SK, pk_attr, sk_attr];
    let valid = map.len() == expected.len()
        && expected.iter().all(|k| map.contains_key(*k))
        && map.get(pk_attr).is_some_and(|v| v == pk_value)
        && map.get(SK).is_some_and(|v| v == KEY_SK)
        && map
            .get(sk_attr)
            .and_then(|v| KeyId::parse(v).ok())
            .is_some_and(|id| map.get(PK) == Some(&key_pk(id.as_str())));
    if !valid {
        return Err(StoreError::InvalidCursor);
    }
    Ok(map.into_iter().map(|(k, v)| (k, s(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_only_resume_their_own_listing() {
        let id = "key_01JD0000000000000000000000";
        let key = BTreeMap::from([
            (PK.to_owned(), key_pk(id)),
            (SK.to_owned(), KEY_SK.to_owned()),
            (GSI1_PK.to_owned(), "CUST#acme".to_owned()),
            (GSI1_SK.to_owned(), id.to_owned()),
        ]);
        let c = encode_cursor(&key);
        assert!(decode_cursor(&c, GSI1_PK, GSI1_SK, "CUST#acme").is_ok());
        assert!(matches!(decode_cursor(&c, GSI1_PK, GSI1_SK, "CUST#other"), Err(StoreError::InvalidCursor)));
        assert!(matches!(decode_cursor(&c, GSI3_PK, GSI3_SK, TYPE_KEYS), Err(StoreError::InvalidCursor)));
        assert!(matches!(decode_cursor("%%%", GSI1_PK, GSI1_SK, "CUST#acme"), Err(StoreError::InvalidCursor)));
    }
}
