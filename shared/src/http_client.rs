//! HTTP clients. [`HttpClient`]: a small HTTP(S) client for calling Stripe's API and, in the
//! local stack, the upstream API, with a deadline on every request and a cap on response size.
//! [`sdk_http_client`]: the one the AWS SDK clients are given. Both are hyper over rustls with
//! the ring crypto provider: one TLS stack, one provider, in every binary.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Responses larger than this are refused rather than buffered.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("the response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("could not set up TLS: {0}")]
    Tls(#[from] std::io::Error),
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// `timeout` bounds each request from connect to the last body byte.
    pub fn new(timeout: Duration) -> Result<Self, HttpError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .build();
        let inner = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector);
        Ok(Self { inner, timeout })
    }

    pub async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let req = req.map(Full::new);
        let exchange = async {
            let resp = self.inner.request(req).await.map_err(|e| HttpError::Transport(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    HttpError::TooLarge
                } else {
                    HttpError::Transport(e.to_string())
                }
            })?;
            Ok(http::Response::from_parts(parts, body.to_bytes()))
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| HttpError::Timeout(self.timeout))?
    }
}

/// The HTTP client for AWS SDK clients (DynamoDB, Secrets Manager, and the credential
/// providers aws-config builds): the SDK's own hyper client over rustls with ring. HTTP and
/// HTTPS (local endpoints are plain HTTP). Each call makes a client with its own connection
/// pool; every function builds its SDK clients once, at cold start.
pub fn sdk_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// hyper's errors say little at the top level ("client error (Connect)"); the cause is below.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
