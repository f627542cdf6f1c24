//! Sign-in with a JWT from the seller's identity provider (a stand-in serving its OpenID
//! configuration and JWKS on loopback, with keys generated here): what the verifier accepts and
//! refuses, the roles through the management API, and customer self-service with its bounds.

use http::Method;
use issue_key::api::{ApiRequest, ManagementApi};
use serde_json::{Value, json};
use shared::domain::customers::SubscriptionStatus;
use shared::identity::Role;
use shared::identity::jwt::{JwtError, JwtVerifier};
use shared::store::dynamo::DynamoStore;
use std::sync::Arc;
use tollgate_tests::oidc::{self, SigningKey, TestIssuer};
use tollgate_tests::{NOW, TestDb, fresh_db};

async fn verifier(issuer: &TestIssuer) -> JwtVerifier {
    JwtVerifier::new(issuer.settings()).expect("verifier")
}

#[tokio::test]
async fn valid_rs256_and_es256_tokens_carry_their_role() {
    let idp = TestIssuer::start().await;
    let v = verifier(&idp).await;
    for (key, label) in [(&idp.rsa, "RS256"), (&idp.ec, "ES256")] {
        for (role, want) in [("admin", Role::Admin), ("read_only", Role::ReadOnly)] {
            let caller = v.verify(&key.sign(&idp.claims(role, None, NOW)), NOW).await.unwrap();
            assert_eq!((caller.role, caller.customer.clone()), (want, None), "{label} {role}");
        }
        let caller = v.verify(&key.sign(&idp.claims("customer", Some("acme"), NOW)), NOW).await.unwrap();
        assert_eq!(caller.role, Role::Customer, "{label}");
        assert_eq!(caller.customer.as_ref().map(|c| c.as_str()), Some("acme"));
        assert_eq!(caller.subject, "jwt:user-customer");
    }
    assert_eq!(idp.jwks_fetches(), 1, "keys are fetched once and kept");
}

#[tokio::test]
async fn time_issuer_and_audience_are_checked() {
    let idp = TestIssuer::start().await;
    let v = verifier(&idp).await;
    let mut expired = idp.claims("admin", None, NOW);
    expired["exp"] = json!(NOW.secs() - 61);
    assert!(matches!(v.verify(&idp.rsa.sign(&expired), NOW).await, Err(JwtError::Expired)));
    expired["exp"] = json!(NOW.secs() - 30);
    assert!(v.verify(&idp.rsa.sign(&expired), NOW).await.is_ok(), "within the clock skew");
    let mut early = idp.claims("admin", None, NOW);
    early["nbf"] = json!(NOW.secs() + 120);
    assert!(matches!(v.verify(&idp.ec.sign(&early), NOW).await, Err(JwtError::NotYetValid)));
    let mut other_issuer = idp.claims("admin", None, NOW);
    other_issuer["iss"] = json!("https://evil.example");
    assert!(matches!(v.verify(&idp.rsa.sign(&other_issuer), NOW).await, Err(JwtError::Invalid("wrong issuer"))));
    let mut other_audience = idp.claims("admin", None, NOW);
    other_audience["aud"] = json!(["https://another.api"]);
    assert!(matches!(v.verify(&idp.rsa.sign(&other_audience), NOW).await, Err(JwtError::Invalid("wrong audience"))));
    let mut no_exp = idp.claims("admin", None, NOW);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(matches!(v.verify(&idp.rsa.sign(&no_exp), NOW).await, Err(JwtError::Invalid(_))));
    let mut list_audience = idp.claims("admin", None, NOW);
    list_audience["aud"] = json!(["https://another.api", oidc::AUDIENCE]);
    assert!(v.verify(&idp.rsa.sign(&list_audience), NOW).await.is_ok(), "aud may be a list naming ours");
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let idp = TestIssuer::start().await;
    let v = verifier(&idp).await;
    let claims = idp.claims("admin", None, NOW);
    // alg: none, no signature.
    assert!(matches!(v.verify(&oidc::unsigned(&claims), NOW).await, Err(JwtError::Malformed)));
    // Algorithm confusion: HS256 keyed with the RSA public key the JWKS publishes.
    let confused = oidc::hs256(&claims, oidc::RSA_KID, &idp.rsa.public_bytes);
    assert!(matches!(v.verify(&confused, NOW).await, Err(JwtError::UnsupportedAlgorithm(_))));
    // A customer's token with its payload rewritten to admin, signature kept.
    let customer = idp.token("customer", Some("acme"), NOW);
    let tampered = oidc::tampered(&customer, &claims);
    assert!(matches!(v.verify(&tampered, NOW).await, Err(JwtError::Invalid("bad signature"))));
    // An RS256 token naming the P-256 key's id: the key decides the algorithm, not the token.
    let rsa_as_ec = SigningKey::rsa(oidc::EC_KID).sign(&claims);
    assert!(matches!(v.verify(&rsa_as_ec, NOW).await, Err(JwtError::AlgorithmMismatch)));
    // Signed by a key the issuer never published.
    let ec_private = SigningKey::ec("other");
    let signed_elsewhere = ec_private.sign(&claims);
    assert!(matches!(v.verify(&signed_elsewhere, NOW).await, Err(JwtError::UnknownKey)));
    assert!(matches!(v.verify("not.a.jwt", NOW).await, Err(JwtError::Malformed)));
}

#[tokio::test]
async fn an_unknown_key_id_costs_one_refresh_then_401() {
    let idp = TestIssuer::start().await;
    let v = verifier(&idp).await;
    assert!(v.verify(&idp.token("admin", None, NOW), NOW).await.is_ok());
    assert_eq!(idp.jwks_fetches(), 1);
    let stranger = SigningKey::ec("rotated-in-later");
    let token = stranger.sign(&idp.claims("admin", None, NOW));
    assert!(matches!(v.verify(&token, NOW).await, Err(JwtError::UnknownKey)));
    assert_eq!(idp.jwks_fetches(), 2, "one refresh for the unknown key id");
    for _ in 0..5 {
        assert!(matches!(v.verify(&token, NOW).await, Err(JwtError::UnknownKey)));
    }
    assert_eq!(idp.jwks_fetches(), 2, "made-up key ids cannot make every request a fetch");
    // A provider that rotated in a new key: a fresh container finds it on the first token.
    idp.publish(stranger.jwk.clone());
    let fresh = verifier(&idp).await;
    assert!(fresh.verify(&token, NOW).await.is_ok());
}

#[tokio::test]
async fn claims_that_grant_no_role_are_forbidden_not_unauthenticated() {
    let idp = TestIssuer::start().await;
    let v = verifier(&idp).await;
    let mut no_role = idp.claims("admin", None, NOW);
    no_role.as_object_mut().unwrap().remove("tollgate_role");
    let e = v.verify(&idp.rsa.sign(&no_role), NOW).await.unwrap_err();
    assert!(e.is_forbidden(), "{e}");
    let e = v.verify(&idp.rsa.sign(&idp.claims("superuser", None, NOW)), NOW).await.unwrap_err();
    assert!(e.is_forbidden(), "{e}");
    let e = v.verify(&idp.rsa.sign(&idp.claims("customer", None, NOW)), NOW).await.unwrap_err();
    assert!(matches!(e, JwtError::NoCustomer(_)), "{e}");
    let mut groups = idp.claims("customer", Some("acme"), NOW);
    groups["tollgate_role"] = json!(["customer", "read_only"]);
    assert_eq!(v.verify(&idp.rsa.sign(&groups), NOW).await.unwrap().role, Role::ReadOnly);
}

/// The management API with the admin token and the stand-in issuer.
struct Api {
    api: ManagementApi<DynamoStore>,
    idp: TestIssuer,
    _db: TestDb,
}

const ADMIN: &str = "identity-admin-token";

async fn api() -> Api {
    let db = fresh_db().await;
    let idp = TestIssuer::start().await;
    let api = ManagementApi::new(db.store.clone(), Some(ADMIN.to_owned().into()))
        .with_jwt(Arc::new(JwtVerifier::new(idp.settings()).unwrap()));
    Api { api, idp, _db: db }
}

impl Api {
    async fn call(&self, bearer: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let method_name = method.to_string();
        let req = ApiRequest::new(method, path)
            .bearer(bearer)
            .body(body.map(|b| b.to_string()).unwrap_or_default())
            .request_id("req-identity");
        let path = path.split('?').next().unwrap_or(path);
        let resp = self.api.handle(req, NOW).await;
        let status = resp.status().as_u16();
        let text = resp.into_body();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        tollgate_tests::openapi::check(&method_name, path, status, &body);
        (status, body)
    }

    fn as_customer(&self, customer: &str) -> String {
        self.idp.token("customer", Some(customer), NOW)
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn roles_decide_what_each_caller_may_do() {
    let a = api().await;
    let plan = json!({"id": "pro", "name": "Pro", "max_keys": 3});
    let reader = a.idp.token("read_only", None, NOW);
    let (status, body) = a.call(&reader, Method::POST, "/v1/plans", Some(plan.clone())).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "read_only writes nothing");
    let admin_jwt = a.idp.rsa.sign(&a.idp.claims("admin", None, NOW));
    assert_eq!(a.call(&admin_jwt, Method::POST, "/v1/plans", Some(plan)).await.0, 201);
    let (status, body) = a.call(&reader, Method::GET, "/v1/plans", None).await;
    assert_eq!((status, body["items"][0]["max_keys"].clone()), (200, json!(3)), "read_only reads everything");
    let customer = a.as_customer("acme");
    for (method, path) in [(Method::GET, "/v1/plans"), (Method::GET, "/v1/keys"), (Method::POST, "/v1/keys")] {
        let (status, body) = a.call(&customer, method.clone(), path, Some(json!({"customer_id": "acme"}))).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "{method} {path}");
    }
    let (status, body) = a.call(&reader, Method::GET, "/v1/me", None).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "/v1/me is for customers");
    // No token, a garbage one, an expired one: 401.
    let mut expired = a.idp.claims("admin", None, NOW);
    expired["exp"] = json!(NOW.secs() - 3600);
    for bad in ["", "garbage", &a.idp.rsa.sign(&expired)] {
        let (status, body) = a.call(bad, Method::GET, "/v1/plans", None).await;
        assert_eq!((status, code(&body)), (401, "unauthorized"), "{bad}");
    }
    assert_eq!(a.call(ADMIN, Method::GET, "/v1/plans", None).await.0, 200, "the admin token still works");
}

#[tokio::test]
async fn a_customer_manages_its_own_keys_and_no_one_elses() {
    let a = api().await;
    let pro = json!({"id": "pro", "name": "Pro", "rate_limit": {"limit": 10, "window_s": 60}, "stripe_price_ids": ["price_pro"]});
    assert_eq!(a.call(ADMIN, Method::POST, "/v1/plans", Some(pro)).await.0, 201);
    // The operator's keys for both customers.
    let (_, other) = a.call(ADMIN, Method::POST, "/v1/keys", Some(json!({"customer_id": "globex"}))).await;
    let other_id = other["key_id"].as_str().unwrap().to_owned();
    assert_eq!(
        a.call(ADMIN, Method::POST, "/v1/keys", Some(json!({"customer_id": "acme", "plan_id": "pro"}))).await.0,
        201
    );
    let acme = a.as_customer("acme");
    // Until acme has a plan of its own, its own keys would have no limits at all: refused,
    // whatever plan the operator put its other key on.
    let (status, body) = a.call(&acme, Method::POST, "/v1/me/keys", Some(json!({}))).await;
    assert_eq!((status, code(&body)), (409, "no_plan"), "{body}");
    tollgate_tests::bill(a.api.store(), "acme", "cus_acme", SubscriptionStatus::Active, Some("price_pro"), NOW.secs())
        .await;

    let (status, me) = a.call(&acme, Method::GET, "/v1/me", None).await;
    assert_eq!((status, me["customer_id"].clone(), me["keys"].clone()), (200, json!("acme"), json!(1)), "{me}");
    let (status, created) = a.call(&acme, Method::POST, "/v1/me/keys", Some(json!({"name": "laptop"}))).await;
    assert_eq!(status, 201, "{created}");
    assert!(created["key"].as_str().unwrap().starts_with("tg_"), "the plaintext, once");
    assert_eq!(created["customer_id"], "acme");
    assert_eq!(created["limits"]["rate_limit"], json!({"limit": 10, "window_s": 60}), "on its plan's limits");
    let mine = created["key_id"].as_str().unwrap().to_owned();
    let (_, listed) = a.call(&acme, Method::GET, "/v1/me/keys", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert!(listed["items"].as_array().unwrap().iter().all(|k| k["customer_id"] == "acme" && k.get("key").is_none()));

    // Another customer's key: 404 on every route, exactly as for a key that does not exist.
    for (method, path) in [
        (Method::GET, format!("/v1/me/keys/{other_id}")),
        (Method::PATCH, format!("/v1/me/keys/{other_id}")),
        (Method::POST, format!("/v1/me/keys/{other_id}/rotate")),
        (Method::POST, format!("/v1/me/keys/{other_id}/revoke")),
        (Method::GET, format!("/v1/me/keys/{other_id}/usage")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"status": "disabled"}));
        let (status, reply) = a.call(&acme, method.clone(), &path, body).await;
        assert_eq!((status, code(&reply)), (404, "not_found"), "{method} {path}");
        assert!(!reply.to_string().contains("globex"));
    }
    let (_, untouched) = a.call(ADMIN, Method::GET, &format!("/v1/keys/{other_id}"), None).await;
    assert_eq!(untouched["status"], "active", "globex's key is as it was");

    // Its own: name, disable, enable, rotate with grace, usage, revoke.
    let (status, k) = a.call(&acme, Method::PATCH, &format!("/v1/me/keys/{mine}"), Some(json!({"name": "ci"}))).await;
    assert_eq!((status, k["name"].clone()), (200, json!("ci")));
    for s in ["disabled", "active"] {
        let (status, k) =
            a.call(&acme, Method::PATCH, &format!("/v1/me/keys/{mine}"), Some(json!({"status": s}))).await;
        assert_eq!((status, k["status"].clone()), (200, json!(s)));
    }
    // Plans, limits and other fields are the operator's.
    for field in
        [json!({"plan_id": "pro"}), json!({"rate_limit": {"limit": 1, "window_s": 1}}), json!({"status": "revoked"})]
    {
        let (status, _) = a.call(&acme, Method::PATCH, &format!("/v1/me/keys/{mine}"), Some(field.clone())).await;
        assert_eq!(status, 422, "{field}");
    }
    let (status, r) =
        a.call(&acme, Method::POST, &format!("/v1/me/keys/{mine}/rotate"), Some(json!({"grace_s": 60}))).await;
    assert_eq!(status, 200);
    assert!(r["key"].is_string() && r["rotation"]["previous_secret_valid_until"].is_string());
    let (status, usage) = a.call(&acme, Method::GET, &format!("/v1/me/keys/{mine}/usage"), None).await;
    assert_eq!((status, usage["key_id"].clone()), (200, json!(mine)));
    assert_eq!(a.call(&acme, Method::GET, "/v1/me/usage", None).await.0, 200);
    let (status, r) = a.call(&acme, Method::POST, &format!("/v1/me/keys/{mine}/revoke"), None).await;
    assert_eq!((status, r["status"].clone()), (200, json!("revoked")));
}

#[tokio::test]
async fn a_key_the_operator_disabled_stays_disabled_for_the_customer() {
    let a = api().await;
    let (_, k) = a.call(ADMIN, Method::POST, "/v1/keys", Some(json!({"customer_id": "acme"}))).await;
    let id = k["key_id"].as_str().unwrap().to_owned();
    let (status, _) =
        a.call(ADMIN, Method::PATCH, &format!("/v1/keys/{id}"), Some(json!({"status": "disabled"}))).await;
    assert_eq!(status, 200);
    let acme = a.as_customer("acme");
    let (status, body) =
        a.call(&acme, Method::PATCH, &format!("/v1/me/keys/{id}"), Some(json!({"status": "active"}))).await;
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");
    let (_, k) = a.call(ADMIN, Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(k["status"], "disabled");
    assert_eq!(a.call(ADMIN, Method::PATCH, &format!("/v1/keys/{id}"), Some(json!({"status": "active"}))).await.0, 200);
    // The customer disables it, the operator disables it too: the disable is the operator's now.
    let disable = Some(json!({"status": "disabled"}));
    assert_eq!(a.call(&acme, Method::PATCH, &format!("/v1/me/keys/{id}"), disable.clone()).await.0, 200);
    assert_eq!(a.call(ADMIN, Method::PATCH, &format!("/v1/keys/{id}"), disable).await.0, 200);
    let (status, body) =
        a.call(&acme, Method::PATCH, &format!("/v1/me/keys/{id}"), Some(json!({"status": "active"}))).await;
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");
}

#[tokio::test]
async fn a_customer_the_operator_never_set_up_has_nothing_to_manage() {
    let a = api().await;
    let stranger = a.as_customer("signed-up-yesterday");
    let (status, body) = a.call(&stranger, Method::GET, "/v1/me", None).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, _) = a.call(&stranger, Method::POST, "/v1/me/keys", Some(json!({}))).await;
    assert_eq!(status, 404, "no key for a customer Tollgate does not know");
}

/// `max_keys` under concurrent creates: exactly that many succeed, the rest are 409.
#[tokio::test]
async fn max_keys_holds_under_concurrent_creates() {
    let a = Arc::new(api().await);
    let plan = json!({"id": "team", "name": "Team", "max_keys": 4, "stripe_price_ids": ["price_team"]});
    assert_eq!(a.call(ADMIN, Method::POST, "/v1/plans", Some(plan)).await.0, 201);
    // acme pays for Team through Stripe (its keys follow that plan), and has one key already.
    tollgate_tests::bill(a.api.store(), "acme", "cus_acme", SubscriptionStatus::Active, Some("price_team"), NOW.secs())
        .await;
    assert_eq!(a.call(ADMIN, Method::POST, "/v1/keys", Some(json!({"customer_id": "acme"}))).await.0, 201);
    let token = a.as_customer("acme");
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (a, token) = (a.clone(), token.clone());
            tokio::spawn(async move {
                a.call(&token, Method::POST, "/v1/me/keys", Some(json!({"name": format!("k{i}")}))).await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            201 => created += 1,
            409 => assert_eq!(code(&body), "max_keys_reached", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 3, "4 allowed, 1 existed");
    let (_, listed) = a.call(&token, Method::GET, "/v1/me/keys?limit=100", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 4);
    // A revoked key frees its place.
    let first = listed["items"][0]["key_id"].as_str().unwrap().to_owned();
    assert_eq!(a.call(&token, Method::POST, &format!("/v1/me/keys/{first}/revoke"), None).await.0, 200);
    assert_eq!(a.call(&token, Method::POST, "/v1/me/keys", Some(json!({}))).await.0, 201);
    assert_eq!(a.call(&token, Method::POST, "/v1/me/keys", Some(json!({}))).await.0, 409);
}
