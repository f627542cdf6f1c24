//! The web console at `/console/`: the files `npm run build` writes to `console/dist` (with
//! the `.br` and `.gz` siblings `scripts/compress.mjs` makes), embedded in release builds and
//! read from disk in debug builds, served with the headers the page relies on, and
//! `/console/config.json` (`TOLLGATE_CONSOLE_CONFIG`) telling it how to sign in.
//!
//! One implementation, two hosts: the local stack routes `/console` here, and in AWS the
//! `console` function (`main.rs`, on the token API beside `/v1/`) does, so the page and the API
//! it calls share an origin in both.

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    LOCATION, REFERRER_POLICY, VARY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use shared::config::ConfigError;

/// `console/dist`. Missing until the console is built (`make console`); the route then says so.
#[derive(rust_embed::Embed)]
#[folder = "../../console/dist"]
#[allow_missing = true]
struct Dist;

pub const PREFIX: &str = "/console/";

/// Hashed file names under `assets/` never change content: a year, immutable.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// What `/console/config.json` answers and the Content-Security-Policy every console response
/// carries (the sign-in provider's origins are the only ones the page may call besides its own).
#[derive(Debug, Clone)]
pub struct Console {
    /// `{}` when no sign-in is configured: the page always finds its configuration.
    config: Bytes,
    csp: HeaderValue,
}

impl Console {
    /// From `TOLLGATE_CONSOLE_CONFIG`: a JSON object, e.g.
    /// `{"oidc":{"issuer":"https://idp.example","client_id":"console"},"role_claim":"tollgate_role"}`;
    /// `connect_src` lists origins the page may call besides its own and the issuer (a token
    /// endpoint on another host, as Cognito's is).
    pub fn from_config(json: Option<&str>) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid { name: "TOLLGATE_CONSOLE_CONFIG", reason };
        let Some(json) = json.map(str::trim).filter(|j| !j.is_empty()) else {
            return Ok(Self { config: Bytes::from_static(b"{}"), csp: csp(&[]) });
        };
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let object = value.as_object().ok_or_else(|| invalid("must be a JSON object".into()))?;
        let mut origins = Vec::new();
        if let Some(oidc) = object.get("oidc") {
            let field = |name: &str| oidc.get(name).and_then(serde_json::Value::as_str).filter(|s| !s.is_empty());
            let issuer = field("issuer").ok_or_else(|| invalid("`oidc.issuer` must be a URL".into()))?;
            field("client_id").ok_or_else(|| invalid("`oidc.client_id` must be a non-empty string".into()))?;
            origins.push(origin(issuer).ok_or_else(|| invalid(format!("`oidc.issuer` `{issuer}` is not a URL")))?);
        }
        // A list, or one string of origins separated by commas or spaces (what a deployment
        // template can write from a single parameter; empty is none).
        let extra: Vec<&str> = match object.get("connect_src") {
            None => Vec::new(),
            Some(serde_json::Value::String(s)) => s.split([',', ' ']).filter(|o| !o.is_empty()).collect(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .map(|o| o.as_str().ok_or_else(|| invalid(format!("`connect_src` entry {o} is not a URL"))))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("`connect_src` must be a list of origins".into())),
        };
        for o in extra {
            origins.push(origin(o).ok_or_else(|| invalid(format!("`connect_src` entry `{o}` is not a URL")))?);
        }
        Ok(Self { config: Bytes::from(value.to_string()), csp: csp(&origins) })
    }

    /// The response to a request for `path` (`/console` or under `/console/`).
    pub fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Bytes> {
        if method != Method::GET && method != Method::HEAD {
            let mut resp =
                error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "The console answers GET and HEAD.");
            resp.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let Some(rel) = path.strip_prefix(PREFIX) else {
            // `/console`: the page's relative URLs need the trailing slash.
            return Response::builder()
                .status(StatusCode::PERMANENT_REDIRECT)
                .header(LOCATION, PREFIX)
                .body(Bytes::new())
                .expect("static redirect");
        };
        if rel == "config.json" {
            return self.with_headers(Response::new(self.config.clone()), "application/json", "no-cache");
        }
        // Hash routing: every page is index.html. A missing hashed asset is a 404, not HTML a
        // script tag would choke on; precompressed siblings are never served by their own names.
        let (file, cache) = match rel {
            _ if rel.starts_with("assets/") => (rel, IMMUTABLE),
            _ if !rel.is_empty() && !rel.ends_with(".br") && !rel.ends_with(".gz") && Dist::get(rel).is_some() => {
                (rel, "no-cache")
            }
            _ => ("index.html", "no-cache"),
        };
        let accepted = accepted_encodings(headers);
        let variant = [("br", ".br"), ("gzip", ".gz")]
            .into_iter()
            .filter(|(coding, _)| accepted.contains(coding))
            .find_map(|(coding, suffix)| Dist::get(&format!("{file}{suffix}")).map(|f| (Some(coding), f)))
            .or_else(|| Dist::get(file).map(|f| (None, f)));
        let Some((coding, embedded)) = variant else {
            return if file == "index.html" {
                let msg = "The console is not built: run `make console` (npm ci and npm run build in console/).";
                error(StatusCode::SERVICE_UNAVAILABLE, "console_not_built", msg)
            } else {
                error(StatusCode::NOT_FOUND, "not_found", "No such console file.")
            };
        };
        let etag = format!("\"{}\"", hex::encode(&embedded.metadata.sha256_hash()[..16]));
        let fresh = headers
            .get(IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        let body = if fresh || method == Method::HEAD { Bytes::new() } else { Bytes::from(embedded.data.into_owned()) };
        let mut resp = self.with_headers(Response::new(body), content_type(file), cache);
        let h = resp.headers_mut();
        h.insert(VARY, HeaderValue::from_static("accept-encoding"));
        h.insert(ETAG, HeaderValue::from_str(&etag).expect("hex etag"));
        if let Some(coding) = coding {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        if fresh {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
        }
        resp
    }

    fn with_headers(
        &self,
        mut resp: Response<Bytes>,
        content_type: &'static str,
        cache: &'static str,
    ) -> Response<Bytes> {
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
        h.insert(CONTENT_SECURITY_POLICY, self.csp.clone());
        h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        resp
    }
}

/// Whether `console/dist` was there when this binary was built (`make console`).
pub fn is_built() -> bool {
    Dist::get("index.html").is_some()
}

/// The function's handler: API Gateway's request (HTTP API, payload format 2.0) to the
/// console's answer. The page's assets are under the absolute `/console/` (Vite's `base`), so
/// the console is served from the API's `$default` stage, not a named one. lambda_http sends compressed and binary answers base64-encoded
/// (API Gateway decodes them) and text as text, by Content-Encoding and Content-Type.
pub fn lambda_response(console: &Console, req: &lambda_http::Request) -> lambda_http::Response<lambda_http::Body> {
    console.respond(req.method(), req.uri().path(), req.headers()).map(|body| match body.is_empty() {
        true => lambda_http::Body::Empty,
        false => lambda_http::Body::Binary(body.to_vec()),
    })
}

/// Scripts, styles and images from this origin only; calls to this origin and the sign-in
/// provider's; no framing, no plugins, no `<base>`.
fn csp(connect_extra: &[String]) -> HeaderValue {
    let connect: String = connect_extra.iter().map(|o| format!(" {o}")).collect();
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; \
         connect-src 'self'{connect}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    );
    HeaderValue::from_str(&policy).expect("origins are checked URL origins")
}

/// `https://idp.example:8443/tenant/` → `https://idp.example:8443`.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    let valid = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    valid.then(|| format!("{scheme}://{host}"))
}

/// The codings `Accept-Encoding` allows (`q=0` excludes one).
fn accepted_encodings(headers: &HeaderMap) -> Vec<&'static str> {
    let mut out = Vec::new();
    for value in headers.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()) {
        for part in value.split(',') {
            let mut fields = part.split(';').map(str::trim);
            let name = fields.next().unwrap_or_default().to_ascii_lowercase();
            let refused =
                fields.any(|p| p.strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)));
            let coding = match name.as_str() {
                "br" => "br",
                "gzip" => "gzip",
                _ => continue,
            };
            if !refused && !out.contains(&coding) {
                out.push(coding);
            }
        }
    }
    out
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Bytes> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header(X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Bytes::from(body))
        .expect("static error response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(console: &Console, path: &str, accept: Option<&str>) -> Response<Bytes> {
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(a).unwrap());
        }
        console.respond(&Method::GET, path, &headers)
    }

    #[test]
    fn config_is_validated_and_its_issuer_may_be_called() {
        let c = Console::from_config(Some(
            r#"{"oidc":{"issuer":"https://idp.example:8443/t/","client_id":"console"},"connect_src":["https://auth.example/x"]}"#,
        ))
        .unwrap();
        let csp = c.csp.to_str().unwrap();
        assert!(csp.contains("connect-src 'self' https://idp.example:8443 https://auth.example;"), "{csp}");
        let r = get(&c, "/console/config.json", None);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        for bad in [
            "[]",
            "nope",
            r#"{"oidc":{"client_id":"c"}}"#,
            r#"{"oidc":{"issuer":"https://i"}}"#,
            r#"{"oidc":{"issuer":"javascript:alert(1)","client_id":"c"}}"#,
            r#"{"oidc":{"issuer":"https://a b","client_id":"c"}}"#,
            r#"{"connect_src":7}"#,
            r#"{"connect_src":"https://ok.example, ftp://x"}"#,
            r#"{"connect_src":[1]}"#,
        ] {
            let e = Console::from_config(Some(bad)).unwrap_err();
            assert!(matches!(e, ConfigError::Invalid { name: "TOLLGATE_CONSOLE_CONFIG", .. }), "{bad}: {e}");
        }
        // One string, as the SAM template writes it from a parameter; empty is none.
        let c = Console::from_config(Some(r#"{"connect_src":"https://a.example/t, https://b.example:9"}"#)).unwrap();
        assert!(c.csp.to_str().unwrap().contains("connect-src 'self' https://a.example https://b.example:9;"));
        let c = Console::from_config(Some(r#"{"connect_src":""}"#)).unwrap();
        assert!(c.csp.to_str().unwrap().contains("connect-src 'self';"));
        // No sign-in configured: an empty configuration, never a 404 in the browser's console.
        let none = Console::from_config(None).unwrap();
        let r = get(&none, "/console/config.json", None);
        assert_eq!((r.status(), r.body().as_ref()), (StatusCode::OK, b"{}".as_slice()));
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn accept_encoding_honours_q_zero() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepted_encodings(&m)
        };
        assert_eq!(h("gzip, deflate, br, zstd"), ["gzip", "br"]);
        assert_eq!(h("br;q=0, gzip;q=0.5"), ["gzip"]);
        assert_eq!(h("identity"), Vec::<&str>::new());
        assert_eq!(h("BR"), ["br"]);
    }

    #[test]
    fn redirects_and_methods() {
        let c = Console::from_config(None).unwrap();
        let r = get(&c, "/console", None);
        assert_eq!((r.status().as_u16(), r.headers()[LOCATION].to_str().unwrap()), (308, "/console/"));
        let r = c.respond(&Method::POST, "/console/", &HeaderMap::new());
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[http::header::ALLOW], "GET, HEAD");
    }

    #[test]
    fn missing_assets_are_404_not_the_page() {
        let c = Console::from_config(None).unwrap();
        let r = get(&c, "/console/assets/nope-123.js", Some("br"));
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn pages_are_index_html_precompressed_when_built() {
        let c = Console::from_config(None).unwrap();
        let r = get(&c, "/console/", Some("gzip, br"));
        if Dist::get("index.html").is_none() {
            // Not built (a plain `cargo test` in a fresh clone): the route says how to build it.
            assert_eq!(r.status(), 503);
            assert!(std::str::from_utf8(r.body()).unwrap().contains("console_not_built"));
            return;
        }
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[CONTENT_ENCODING], "br");
        assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
        assert_eq!(r.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        let etag = r.headers()[ETAG].clone();
        // The same page under any route, and a revalidation answers 304 with no body.
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("br"));
        h.insert(IF_NONE_MATCH, etag);
        let r = c.respond(&Method::GET, "/console/keys/deep/link", &h);
        assert_eq!((r.status().as_u16(), r.body().len()), (304, 0));
        let plain = get(&c, "/console/index.html.br", None);
        assert_eq!(plain.status(), 200);
        assert!(plain.headers().get(CONTENT_ENCODING).is_none());
        assert!(std::str::from_utf8(plain.body()).unwrap().contains("<html"));
    }

    /// An HTTP API (payload format 2.0) event for `GET path`, as API Gateway sends it.
    fn gateway_event(method: &str, path: &str, accept: &str) -> lambda_http::Request {
        let event = serde_json::json!({
            "version": "2.0",
            "routeKey": "ANY /console/{proxy+}",
            "rawPath": path,
            "rawQueryString": "",
            "headers": { "accept-encoding": accept, "host": "abc123.execute-api.eu-west-1.amazonaws.com" },
            "requestContext": {
                "accountId": "123456789012", "apiId": "abc123",
                "domainName": "abc123.execute-api.eu-west-1.amazonaws.com", "domainPrefix": "abc123",
                "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "t" },
                "requestId": "req-1", "routeKey": "ANY /console/{proxy+}", "stage": "$default",
                "time": "06/Dec/2026:20:00:00 +0000", "timeEpoch": 1796587200000u64
            },
            "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).unwrap()
    }

    /// What the runtime sends back: the handler's answer through lambda_http's conversion.
    async fn through_lambda(
        c: &Console,
        method: &str,
        path: &str,
        accept: &str,
    ) -> lambda_http::Response<lambda_http::Body> {
        use lambda_http::IntoResponse;
        lambda_response(c, &gateway_event(method, path, accept)).into_response().await
    }

    #[tokio::test]
    async fn the_function_answers_api_gateway_events() {
        let c =
            Console::from_config(Some(r#"{"oidc":{"issuer":"https://idp.example","client_id":"console"}}"#)).unwrap();
        let r = through_lambda(&c, "GET", "/console", "br").await;
        assert_eq!((r.status().as_u16(), r.headers()[LOCATION].to_str().unwrap()), (308, "/console/"));
        let r = through_lambda(&c, "GET", "/console/config.json", "br").await;
        assert_eq!(r.status(), 200);
        let lambda_http::Body::Text(json) = r.body() else { panic!("config.json goes as text: {:?}", r.body()) };
        assert_eq!(serde_json::from_str::<serde_json::Value>(json).unwrap()["oidc"]["client_id"], "console");
        assert!(r.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().contains("https://idp.example"));
        let r = through_lambda(&c, "DELETE", "/console/", "br").await;
        assert_eq!(r.status(), 405);
        let r = through_lambda(&c, "GET", "/console/keys", "gzip, br").await;
        if !is_built() {
            assert_eq!(r.status(), 503);
            return;
        }
        // The page, brotli-compressed, as bytes API Gateway gets base64-encoded.
        assert_eq!((r.status().as_u16(), r.headers()[CONTENT_ENCODING].to_str().unwrap()), (200, "br"));
        let lambda_http::Body::Binary(br) = r.body() else { panic!("compressed pages go as binary") };
        assert_eq!(Some(&br[..]), Dist::get("index.html.br").map(|f| f.data.into_owned()).as_deref());
        // Without Accept-Encoding: the plain HTML, as text.
        let r = through_lambda(&c, "GET", "/console/", "identity").await;
        let lambda_http::Body::Text(html) = r.body() else { panic!("plain HTML goes as text") };
        assert!(html.contains("<html"));
    }
}
