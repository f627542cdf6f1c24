//! What the CLI prints: tables for people, the same data as JSON with `--json`.

use comfy_table::{Table, presets};
use serde_json::Value;
pub(super) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(header.to_vec());
    t
}

pub(super) fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

pub(super) fn plans_table(plans: &[tollgate_client::Plan]) -> String {
    let mut t = table(&["ID", "NAME", "RATE LIMIT", "QUOTA", "METER", "PRICES"]);
    for p in plans {
        t.add_row(vec![
            p.id.clone(),
            p.name.clone(),
            or_dash(p.rate_limit.map(|r| format!("{}/{}s", r.limit, r.window_s))),
            or_dash(p.quota.as_ref().map(|q| format!("{}/{}", q.limit, q.period))),
            or_dash(p.meter_event_name.as_deref()),
            if p.stripe_price_ids.is_empty() { "-".into() } else { p.stripe_price_ids.join(",") },
        ]);
    }
    format!("{t}\n")
}

pub(super) fn keys_table(keys: &[tollgate_client::Key]) -> String {
    let mut t = table(&["KEY ID", "DISPLAY", "CUSTOMER", "PLAN", "STATUS", "NAME", "LAST USED"]);
    for k in keys {
        t.add_row(vec![
            k.key_id.clone(),
            k.display.clone(),
            k.customer_id.clone(),
            or_dash(k.limits.plan_id.as_deref()),
            k.status.clone(),
            or_dash(k.name.as_deref()),
            k.last_used_at.clone().unwrap_or_else(|| "never".into()),
        ]);
    }
    format!("{t}\n")
}

pub(super) fn issued_text(k: &tollgate_client::IssuedKey, what: &str) -> String {
    format!(
        "{what} key {} for customer {}\n\n  {}\n\nThe plaintext is shown this once: Tollgate keeps only its SHA-256.\n",
        k.record.key_id, k.record.customer_id, k.key
    )
}

pub(super) fn customer_text(c: &tollgate_client::Customer) -> String {
    let mut t = table(&["FIELD", "VALUE"]);
    for (field, value) in [
        ("customer", Some(c.customer_id.clone())),
        ("plan", c.plan_id.clone()),
        ("subscription", c.subscription_status.clone()),
        ("period ends", c.current_period_end.clone()),
        ("stripe customer", c.stripe_customer_id.clone()),
        ("stripe subscription", c.stripe_subscription_id.clone()),
        ("unknown price", c.unknown_price_id.clone()),
        ("keys", Some(if c.keys.is_empty() { "-".into() } else { c.keys.join(", ") })),
    ] {
        t.add_row(vec![field.to_owned(), or_dash(value)]);
    }
    format!("{t}\n")
}

pub(super) fn codes(by_code: &std::collections::BTreeMap<String, u64>) -> String {
    if by_code.is_empty() {
        return "-".into();
    }
    by_code.iter().map(|(c, n)| format!("{c}={n}")).collect::<Vec<_>>().join(" ")
}

pub(super) fn customer_usage_table(u: &tollgate_client::CustomerUsage) -> String {
    let mut t = table(&["DAY", "METER", "ALLOWED", "DENIED", "BY CODE", "REPORTED", "PENDING", "UNBILLED"]);
    for d in &u.history {
        t.add_row(vec![
            d.day.clone(),
            or_dash(d.meter.as_deref()),
            d.allowed.to_string(),
            d.denied.to_string(),
            codes(&d.denied_by_code),
            d.reported.to_string(),
            d.pending.to_string(),
            d.unbilled.to_string(),
        ]);
    }
    format!("{t}\n")
}

pub(super) fn usage_text(u: &tollgate_client::Usage) -> String {
    let mut s = format!("key {}\n", u.key_id);
    for (what, l) in [("rate limit", &u.rate_limit), ("quota", &u.quota)] {
        match l {
            Some(l) => s.push_str(&format!(
                "  {what}: {} of {} used, {} left, resets {}\n",
                l.used, l.limit, l.remaining, l.reset
            )),
            None => s.push_str(&format!("  {what}: none\n")),
        }
    }
    let mut t = table(&["DAY", "ALLOWED", "DENIED", "BY CODE"]);
    for d in &u.history {
        t.add_row(vec![d.day.clone(), d.allowed.to_string(), d.denied.to_string(), codes(&d.denied_by_code)]);
    }
    format!("{s}\n{t}\n")
}

pub(super) fn stats_text(st: &tollgate_client::Stats) -> String {
    let mut days = table(&["DAY", "ALLOWED", "DENIED", "BY CODE"]);
    for d in st.days.iter().filter(|d| d.allowed > 0 || d.denied > 0) {
        days.add_row(vec![d.day.clone(), d.allowed.to_string(), d.denied.to_string(), codes(&d.denied_by_code)]);
    }
    let mut top = table(&["TOP KEYS", "CUSTOMER", "ALLOWED"]);
    for k in &st.top_keys {
        top.add_row(vec![k.key_id.clone(), k.customer_id.clone(), k.allowed.to_string()]);
    }
    let mut customers = table(&["TOP CUSTOMERS", "ALLOWED"]);
    for c in &st.top_customers {
        customers.add_row(vec![c.customer_id.clone(), c.allowed.to_string()]);
    }
    let mut near = table(&["NEAR QUOTA", "CUSTOMER", "USED", "LIMIT", "RESETS"]);
    for n in &st.near_quota {
        near.add_row(vec![
            n.key_id.clone(),
            n.customer_id.clone(),
            n.used.to_string(),
            format!("{}/{}", n.limit, n.period),
            n.reset.clone(),
        ]);
    }
    format!(
        "{} to {} (days with traffic; as of the last rollup)\n{days}\n\non {}:\n{top}\n\n{customers}\n\n{near}\n",
        st.from, st.to, st.day
    )
}

pub(super) fn rollup_text(report: &Value) -> String {
    let n = |k: &str| report[k].as_u64().unwrap_or(0);
    format!(
        "rollup {}: {} keys active, {} key-days rolled, {} settled, {} deferred; {} units reported, {} unbilled ({} ms)\n",
        report["status"].as_str().unwrap_or("?"),
        n("keys_active"),
        n("key_days_rolled"),
        n("keys_settled"),
        n("keys_deferred"),
        n("units_reported"),
        n("units_unbilled"),
        n("duration_ms"),
    )
}
