//! SDK failures as [`StoreError`]s: the outage classes of the fail-mode matrix
//! (docs/authorizer.md, "Fail modes"), or a hard error that keeps the SDK error as its source.

use crate::store::{Fault, Outage, StoreError};
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// Maps an SDK failure to what callers act on: an outage of a known class (the fail-mode
/// matrix's rows; safe to retry) or a hard error. The SDK error stays the source.
pub(super) fn sdk_err<E>(err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let fault = match &err {
        SdkError::TimeoutError(_) => Some(Fault::Timeout),
        SdkError::DispatchFailure(d) if d.is_timeout() => Some(Fault::Timeout),
        // Refused, reset, or dropped before or while the answer came back.
        SdkError::DispatchFailure(d)
            if d.is_io() || d.as_other() == Some(aws_smithy_types::retry::ErrorKind::TransientError) =>
        {
            Some(Fault::Connection)
        }
        SdkError::ResponseError(_) => Some(Fault::Connection),
        // Failed before anything was sent (credentials, signing, endpoint): not an outage.
        SdkError::DispatchFailure(_) => None,
        SdkError::ServiceError(se) => match se.err().code() {
            Some("ProvisionedThroughputExceededException" | "RequestLimitExceeded" | "ThrottlingException") => {
                Some(Fault::Throttled)
            }
            Some("TransactionConflictException") => Some(Fault::Contention),
            Some("InternalServerError" | "ServiceUnavailable") => Some(Fault::Server),
            _ if se.raw().status().is_server_error() => Some(Fault::Server),
            _ => None,
        },
        _ => None,
    };
    let described = format!("{}", DisplayErr(&err));
    match fault {
        Some(fault) => StoreError::Unavailable(Outage::caused_by(fault, err).with_detail(described)),
        None => StoreError::Backend(Box::new(Described { described, source: Box::new(err) })),
    }
}

/// An SDK error described with its service code and message, keeping the error as source.
#[derive(Debug)]
pub(super) struct Described {
    described: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.described)
    }
}

impl std::error::Error for Described {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// An SDK error with its service code and message, for logs.
struct DisplayErr<'a, E, R>(&'a SdkError<E, R>);

impl<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug + 'static> std::fmt::Display
    for DisplayErr<'_, E, R>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            SdkError::ServiceError(se) => write!(
                f,
                "{}: {}",
                se.err().code().unwrap_or("ServiceError"),
                se.err().message().unwrap_or("no message")
            ),
            other => {
                write!(f, "{other}")?;
                let mut source = std::error::Error::source(other);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
        }
    }
}
