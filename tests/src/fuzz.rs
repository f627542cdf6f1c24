//! The fuzz targets' bodies, shared by cargo-fuzz (`fuzz/`, nightly, `make fuzz`) and the
//! corpus replay under `make test` (`tests/tests/artifacts/fuzz_corpus.rs`, stable), so the committed
//! corpus keeps exercising exactly what was fuzzed.
//!
//! Each target takes arbitrary bytes and checks more than "no panic": the oracle is what the
//! contract promises for any input: a parse either fails or round-trips; a handler answers a
//! status from the contract with the JSON error envelope, and never 500 (an internal error is a
//! bug for any input); a cursor is either accepted or refused as `InvalidCursor`.
//!
//! The targets that reach storage share one in-process Dynoxide and table per process, built
//! on first use.

use http::{HeaderMap, HeaderValue, Method};
use issue_key::api::{ApiRequest, ManagementApi};
use shared::app::authorize::{Authorizer, bearer_token, presented_key};
use shared::config::{FailMode, Secrets};
use shared::domain::api_key::{ApiKey, KeyEnv, KeyId};
use shared::domain::customers::CustomerId;
use shared::domain::plans::PlanId;
use shared::store::dynamo::DynamoStore;
use shared::store::{KeyFilter, KeyStore, NewKey, PlanStore, StoreError};
use shared::stripe::signature::{MAX_V1, SignatureError, sign, verify};
use std::sync::OnceLock;
use stripe_webhook::handler::Webhook;

use crate::NOW;
const SECRET: &str = "whsec_fuzz_secret";
const ADMIN: &str = "tga_fuzz_admin";

/// The process-wide runtime, store and handlers of the storage-backed targets.
struct World {
    runtime: tokio::runtime::Runtime,
    store: DynamoStore,
    authorizer: Authorizer<DynamoStore>,
    api: ManagementApi<DynamoStore>,
    webhook: Webhook<DynamoStore>,
    key: String,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
        let (store, key) = runtime.block_on(async {
            let db = crate::fresh_db().await;
            let store = db.store.clone();
            // The database outlives every input: leak it with the process.
            std::mem::forget(db);
            let plan = crate::plan("pro", Some(1_000_000), &["price_fuzz"], Some("api_requests"), NOW);
            store.create_plan(&plan).await.expect("plan");
            let key = ApiKey::generate(KeyEnv::Live).expect("key");
            let customer = CustomerId::parse("fuzz").expect("customer");
            store.create_key(NewKey::new(&key, customer, Some(plan.id.clone()), NOW)).await.expect("key");
            (store, key.expose_secret().to_owned())
        });
        World {
            authorizer: Authorizer::new(store.clone(), FailMode::Closed),
            api: ManagementApi::new(store.clone(), Some(ADMIN.to_owned().into())),
            webhook: Webhook::new(store.clone(), Secrets::parse(SECRET), 300, 3_600),
            runtime,
            store,
            key,
        }
    })
}

/// Splits input into `n` parts at 0xFF bytes (fewer parts are padded with empty ones).
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0xFF).collect();
    out.resize(n, &[]);
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Key, id and credential parsing: pure, no storage.
pub fn key(data: &[u8]) {
    let s = text(data);
    if let Ok(key) = ApiKey::parse(&s) {
        // Accepted: it round-trips to the same secret and hash, and its display hides it.
        let again = ApiKey::parse(key.expose_secret()).expect("an accepted key parses again");
        assert_eq!(again.hash(), key.hash());
        assert!(!key.display().contains(key.expose_secret()));
        assert!(key.expose_secret().starts_with("tg_live_") || key.expose_secret().starts_with("tg_test_"));
    }
    if let Ok(id) = KeyId::parse(&s) {
        assert_eq!(KeyId::parse(id.as_str()).expect("round trip").as_str(), id.as_str());
    }
    let _ = CustomerId::parse(&s);
    let _ = PlanId::parse(&s);
    if let Some(token) = bearer_token(&s) {
        assert!(!token.is_empty() && s.contains(token));
    }
    let [name, value] = [0, 1].map(|i| text(parts(data, 2)[i]));
    if let Some(presented) = presented_key([(name.as_str(), value.as_str())]) {
        assert!(!presented.is_empty() && value.contains(presented));
    }
}

/// `Stripe-Signature` parsing and verification, and the webhook on any body signed correctly
/// (so event parsing is reached): 400 for a bad signature, never 500, nothing else panics.
pub fn stripe_signature(data: &[u8]) {
    let [header, body] = [0, 1].map(|i| parts(data, 2)[i]);
    let header = text(header);
    let result = verify(Some(&header), body, [SECRET, "whsec_other"], NOW.secs(), 300);
    if let Ok(sig) = &result {
        assert!((sig.timestamp() - NOW.secs()).abs() <= 300, "a stale signature verified");
    }
    if header.matches("v1=").count() > MAX_V1 {
        assert!(result.is_err(), "more than {MAX_V1} candidates accepted");
    }
    // The body signed as Stripe would: verification holds, and the handler answers sanely.
    let signed = sign(body, SECRET, NOW.secs());
    assert!(verify(Some(&signed), body, [SECRET], NOW.secs(), 300).is_ok());
    assert_eq!(verify(Some(&signed), body, ["whsec_other"], NOW.secs(), 300).err(), Some(SignatureError::NoMatch));
    let w = world();
    for header in [signed.as_str(), header.as_str()] {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(header) {
            headers.insert("stripe-signature", v);
        }
        let resp = w.runtime.block_on(w.webhook.handle(&headers, body, "req-fuzz", NOW));
        let status = resp.status().as_u16();
        assert!(matches!(status, 200 | 400 | 409 | 413 | 422 | 503), "webhook answered {status}: {}", resp.body());
        let json: serde_json::Value = serde_json::from_str(resp.body()).expect("a JSON body");
        if status >= 400 {
            assert!(json["error"]["code"].is_string(), "{json}");
        }
    }
}

/// Authorizer events of any shape: parsed or refused as a bad event, never a panic; a decision
/// for the world's key is what storage says.
pub fn authorizer_event(data: &[u8]) {
    let w = world();
    let mut events = vec![];
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        events.push(v);
    }
    // The fuzzed text as the key inside each real event shape (the fixtures in events/).
    let presented = text(data);
    let shapes = authorizer_shapes();
    for (template, set) in shapes {
        let mut event = template.clone();
        set(&mut event, &presented);
        events.push(event);
    }
    for event in events {
        let _ = w.runtime.block_on(authorizer::handler::handle(&w.authorizer, event, NOW));
    }
    let mut ok = shapes[0].0.clone();
    (shapes[0].1)(&mut ok, &w.key);
    let r = w.runtime.block_on(authorizer::handler::handle(&w.authorizer, ok, NOW)).expect("the world's key");
    assert_eq!(r["isAuthorized"], true, "{r}");
}

type SetKey = fn(&mut serde_json::Value, &str);

/// The three event shapes API Gateway sends, each with where the key goes.
fn authorizer_shapes() -> &'static [(serde_json::Value, SetKey); 3] {
    static SHAPES: OnceLock<[(serde_json::Value, SetKey); 3]> = OnceLock::new();
    SHAPES.get_or_init(|| {
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("an events/ fixture");
        [
            (parse(include_str!("../../events/authorizer-http-api-key.json")), |e, k| {
                e["headers"]["x-api-key"] = k.into()
            }),
            (parse(include_str!("../../events/authorizer-rest-token.json")), |e, k| {
                e["authorizationToken"] = format!("Bearer {k}").into()
            }),
            (parse(include_str!("../../events/authorizer-rest-request.json")), |e, k| {
                e["headers"] = serde_json::json!({ "authorization": format!("Bearer {k}") })
            }),
        ]
    })
}

const ROUTES: &[&str] = &[
    "/v1/plans",
    "/v1/plans/{}",
    "/v1/keys",
    "/v1/keys/{}",
    "/v1/keys/{}/rotate",
    "/v1/keys/{}/revoke",
    "/v1/keys/{}/usage",
    "/v1/customers/{}",
    "/v1/customers/{}/usage",
    "/v1/claim",
];

/// Management requests: a route, an id segment, a query string and a body, all fuzzed. Every
/// answer is a contract status with the error envelope; 500 never happens.
pub fn management(data: &[u8]) {
    let [selector, id, query, body] = [0, 1, 2, 3].map(|i| parts(data, 4)[i]);
    let pick = |i: usize| selector.get(i).copied().unwrap_or(0) as usize;
    let method = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE][pick(0) % 5].clone();
    let id = text(id);
    let path = ROUTES[pick(1) % ROUTES.len()].replace("{}", &id);
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {ADMIN}")).expect("header"));
    if pick(2) % 2 == 1 {
        headers.insert("idempotency-key", HeaderValue::from_static("fuzz-idem"));
    }
    let req = ApiRequest {
        method,
        path,
        query: text(query),
        headers,
        body: body.to_vec(),
        request_id: "req-fuzz".into(),
        caller: None,
        source: Some("192.0.2.1".into()),
    };
    let w = world();
    let resp = w.runtime.block_on(w.api.handle(req, NOW));
    let status = resp.status().as_u16();
    assert!(
        matches!(status, 200 | 201 | 204 | 400 | 401 | 404 | 405 | 409 | 413 | 422 | 429 | 501 | 503),
        "management answered {status}: {}",
        resp.body()
    );
    if status >= 400 {
        let json: serde_json::Value = serde_json::from_str(resp.body()).expect("a JSON error body");
        assert!(json["error"]["code"].is_string() && json["request_id"] == "req-fuzz", "{json}");
    }
}

/// Listing cursors: any string is either a cursor this API returned or `InvalidCursor`.
pub fn cursor(data: &[u8]) {
    let w = world();
    let raw = text(data);
    let filters = [
        KeyFilter::default(),
        KeyFilter { customer_id: CustomerId::parse("fuzz").ok(), ..KeyFilter::default() },
        KeyFilter { plan_id: PlanId::parse("pro").ok(), ..KeyFilter::default() },
    ];
    for filter in filters {
        match w.runtime.block_on(w.store.list_keys(&filter, 10, Some(&raw))) {
            Ok(_) | Err(StoreError::InvalidCursor) => {}
            Err(e) => panic!("cursor {raw:?} gave {e:?}"),
        }
    }
}

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by its directory name under `fuzz/corpus/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("key", key),
    ("stripe_signature", stripe_signature),
    ("authorizer_event", authorizer_event),
    ("management", management),
    ("cursor", cursor),
];
