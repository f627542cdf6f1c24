//! A stand-in for the seller's identity provider on loopback: its OpenID configuration and its
//! JSON Web Key Set, served over HTTP, with RSA (RS256) and P-256 (ES256) keys generated here
//! for this process, and tokens signed with them. It counts the key-set fetches, so a test can
//! show when the verifier went back for keys.

use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use shared::domain::time::UnixTime;
use shared::identity::jwt::JwtSettings;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub const AUDIENCE: &str = "https://api.tollgate.test";
pub const RSA_KID: &str = "rsa-1";
pub const EC_KID: &str = "ec-1";

/// A signing key of the stand-in's.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The public key as the JWKS publishes it.
    pub jwk: Value,
    /// The public key's bytes (DER for RSA, the uncompressed point for P-256): what an
    /// algorithm-confusion attack would use as an HMAC secret.
    pub public_bytes: Vec<u8>,
}

impl SigningKey {
    /// A 2048-bit RSA key (RS256). Generated once per process: it takes a moment.
    pub fn rsa(kid: &str) -> Self {
        static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
        let private =
            KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("generate an RSA key"));
        let public = private.to_public_key();
        let der = private.to_pkcs1_der().expect("PKCS#1 DER");
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": B64.encode(public.n().to_bytes_be()), "e": B64.encode(public.e().to_bytes_be()),
        });
        let public_bytes = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_der(&public).expect("public DER").into_vec();
        Self {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk,
            public_bytes,
        }
    }

    /// A fresh P-256 key (ES256).
    pub fn ec(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("generate a P-256 key");
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("the key just made");
        let point = pair.public_key().as_ref().to_vec();
        let jwk = json!({
            "kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        });
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
            public_bytes: point,
        }
    }

    /// `claims` signed with this key, its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign a token")
    }
}

struct Inner {
    keys: Vec<Value>,
}

/// The identity provider stand-in.
pub struct TestIssuer {
    pub issuer: String,
    pub rsa: SigningKey,
    pub ec: SigningKey,
    inner: Arc<Mutex<Inner>>,
    fetches: Arc<(AtomicUsize, AtomicUsize)>,
}

impl TestIssuer {
    /// Serves discovery and a key set with one RSA and one P-256 key.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the issuer stand-in");
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let (rsa, ec) = (SigningKey::rsa(RSA_KID), SigningKey::ec(EC_KID));
        let inner = Arc::new(Mutex::new(Inner { keys: vec![rsa.jwk.clone(), ec.jwk.clone()] }));
        let fetches = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let state = (inner.clone(), fetches.clone(), issuer.clone());
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks.json", get(jwks))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { issuer, rsa, ec, inner, fetches }
    }

    /// Settings for a verifier of this issuer (JWKS discovered), with the default claims.
    pub fn settings(&self) -> JwtSettings {
        JwtSettings {
            issuer: self.issuer.clone(),
            audience: AUDIENCE.into(),
            jwks_url: None,
            role_claim: shared::identity::jwt::DEFAULT_ROLE_CLAIM.into(),
            customer_claim: shared::identity::jwt::DEFAULT_CUSTOMER_CLAIM.into(),
        }
    }

    /// The environment a local stack needs to trust this issuer.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("TOLLGATE_JWT_ISSUER", self.issuer.clone()), ("TOLLGATE_JWT_AUDIENCE", AUDIENCE.into())]
    }

    /// Publishes another key (a rotation at the provider).
    pub fn publish(&self, jwk: Value) {
        self.inner.lock().unwrap().keys.push(jwk);
    }

    /// How many times the key set was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.fetches.0.load(Ordering::SeqCst)
    }

    /// Claims for `role` (and `customer`), valid from `now` for an hour, for this issuer.
    pub fn claims(&self, role: &str, customer: Option<&str>, now: UnixTime) -> Value {
        let mut claims = json!({
            "iss": self.issuer, "aud": AUDIENCE, "sub": format!("user-{role}"),
            "iat": now.secs(), "nbf": now.secs(), "exp": now.secs() + 3600,
            "tollgate_role": role,
        });
        if let Some(c) = customer {
            claims["tollgate_customer_id"] = c.into();
        }
        claims
    }

    /// An RS256 token for `role` (and `customer`) at `now`.
    pub fn token(&self, role: &str, customer: Option<&str>, now: UnixTime) -> String {
        self.rsa.sign(&self.claims(role, customer, now))
    }
}

type IssuerState = (Arc<Mutex<Inner>>, Arc<(AtomicUsize, AtomicUsize)>, String);

async fn discovery(State((_, fetches, issuer)): State<IssuerState>) -> axum::Json<Value> {
    fetches.1.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({
        "issuer": issuer, "jwks_uri": format!("{issuer}/jwks.json"),
        "authorization_endpoint": format!("{issuer}/authorize"), "token_endpoint": format!("{issuer}/token"),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn jwks(State((inner, fetches, _)): State<IssuerState>) -> axum::Json<Value> {
    fetches.0.fetch_add(1, Ordering::SeqCst);
    let keys = inner.lock().unwrap().keys.clone();
    axum::Json(json!({ "keys": keys }))
}

/// A token with `alg: none` and no signature.
pub fn unsigned(claims: &Value) -> String {
    let header = B64.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    format!("{header}.{}.", B64.encode(claims.to_string()))
}

/// `token` with its payload replaced by `claims` and its signature kept.
pub fn tampered(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let (header, _, signature) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    format!("{header}.{}.{signature}", B64.encode(claims.to_string()))
}

/// `claims` as HS256, keyed with `secret` and naming `kid`: algorithm confusion, when the
/// secret is a public key the verifier knows.
pub fn hs256(claims: &Value, kid: &str, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign HS256")
}
