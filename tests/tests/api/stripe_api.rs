//! The Stripe API client's meter events against the local stand-in: what it sends, and how
//! each kind of answer is classified (the rollup's exactly-once reporting stands on this).

use shared::stripe::api::{MeterEvent, MeterEventOutcome, StripeApi, StripeError};
use std::time::Duration;
use tollgate_tests::stripe::{API_KEY, Fault, StripeStandIn};

fn event(identifier: &str) -> MeterEvent<'_> {
    MeterEvent {
        event_name: "api_requests",
        stripe_customer_id: "cus_RTollgateDemo",
        value: 1234,
        timestamp: 1_795_428_000,
        identifier,
    }
}

#[tokio::test]
async fn meter_events_are_form_encoded_and_classified() {
    let standin = StripeStandIn::start().await;
    let stripe = StripeApi::new(&standin.base, API_KEY.to_owned().into(), Duration::from_millis(500)).unwrap();

    assert_eq!(stripe.send_meter_event(&event("tg-usage-1")).await.unwrap(), MeterEventOutcome::Accepted);
    let sent = standin.meter_events();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["event_name"], "api_requests");
    assert_eq!(sent[0]["payload[stripe_customer_id]"], "cus_RTollgateDemo");
    assert_eq!(sent[0]["payload[value]"], "1234");
    assert_eq!(sent[0]["timestamp"], "1795428000");
    assert_eq!(sent[0]["identifier"], "tg-usage-1");
    assert!(standin.requests().iter().all(|r| r.authorization.as_deref() == Some(&format!("Bearer {API_KEY}"))));

    // A resend of the same increment: Stripe's duplicate answer means delivered.
    assert_eq!(stripe.send_meter_event(&event("tg-usage-1")).await.unwrap(), MeterEventOutcome::AlreadyDelivered);

    standin.inject(&[Fault::Status(429), Fault::Status(503), Fault::Delay(Duration::from_secs(2)), Fault::Status(402)]);
    for expect_retryable in [true, true, true, false] {
        let err = stripe.send_meter_event(&event("tg-usage-2")).await.unwrap_err();
        assert_eq!(err.is_retryable(), expect_retryable, "{err}");
    }
    // Accepted but answered 500 (a crash after the accept): the retry finds it delivered.
    standin.inject(&[Fault::AcceptThen500]);
    assert!(matches!(stripe.send_meter_event(&event("tg-usage-3")).await, Err(StripeError::Unavailable(_))));
    assert_eq!(stripe.send_meter_event(&event("tg-usage-3")).await.unwrap(), MeterEventOutcome::AlreadyDelivered);
    assert_eq!(standin.meter_events().len(), 2, "each identifier counted once");

    let wrong = StripeApi::new(&standin.base, "sk_test_wrong".to_owned().into(), Duration::from_secs(1)).unwrap();
    let err = wrong.send_meter_event(&event("tg-usage-4")).await.unwrap_err();
    assert!(matches!(err, StripeError::Rejected { status: 401, .. }), "{err}");
    assert!(!err.to_string().contains("sk_test_wrong"));
}
