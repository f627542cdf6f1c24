//! Operational metrics: decisions by outcome code and plan, decision latency, usage rollup runs
//! and webhook deliveries by outcome. Counted in memory, per process; in Lambda written as
//! CloudWatch Embedded Metric Format lines on stdout (CloudWatch Logs extracts them: no API
//! call, no DynamoDB request, nothing on the decision's path but a counter), and served by the
//! local stack as Prometheus text at `GET /metrics`.
//!
//! EMF lines are flushed at the end of an invocation once [`EMF_FLUSH_EVERY_MS`] has passed
//! since the last flush (and always by the rollup, whose runs are rare), so a busy authorizer
//! writes a few lines a minute whatever its request rate. What a container counted after its
//! last flush is lost when Lambda reclaims it: at most that interval of one container's counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Tollgate";
/// How often a Lambda container writes what it counted.
pub const EMF_FLUSH_EVERY_MS: i64 = 10_000;
/// EMF takes at most 100 values per metric in one line: latencies beyond that are sampled.
const EMF_MAX_VALUES: usize = 100;
/// Upper bounds (seconds) of the Prometheus latency histogram's buckets.
const LATENCY_BUCKETS_S: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0];

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The process's metrics (one per Lambda container, one for the local stack).
pub fn global() -> &'static Metrics {
    &GLOBAL
}

/// The rollup counters, in the order they are reported.
pub const ROLLUP_COUNTERS: [&str; 6] =
    ["key_days_rolled", "keys_settled", "keys_deferred", "events_accepted", "units_reported", "units_unbilled"];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// One per outcome and plan (a handful): found by a scan, so counting a decision allocates
    /// nothing once its series exists.
    decisions: Vec<Series>,
    latency_buckets: [u64; LATENCY_BUCKETS_S.len()],
    latency_sum_s: f64,
    latency_count: u64,
    rollup_runs: BTreeMap<String, u64>,
    rollup_totals: BTreeMap<&'static str, u64>,
    webhook_events: BTreeMap<String, u64>,
    // Since the last EMF flush.
    pending_webhook: BTreeMap<String, u64>,
    pending_rollup: Vec<String>,
    last_flush_ms: Option<i64>,
}

struct Series {
    outcome: String,
    plan: String,
    /// Since the process started (Prometheus).
    total: u64,
    /// Since the last EMF flush.
    pending: Pending,
}

#[derive(Default)]
struct Pending {
    count: u64,
    /// Latencies in milliseconds, at most [`EMF_MAX_VALUES`] (a uniform sample beyond).
    samples: Vec<f64>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One authorization decision: `outcome` is `ok` or the denial code.
    pub fn decision(&self, outcome: &str, plan: Option<&str>, latency: Duration) {
        let plan = plan.unwrap_or("none");
        let mut m = self.lock();
        let i = match m.decisions.iter().position(|s| s.outcome == outcome && s.plan == plan) {
            Some(i) => i,
            None => {
                let series = Series {
                    outcome: outcome.to_owned(),
                    plan: plan.to_owned(),
                    total: 0,
                    pending: Pending::default(),
                };
                m.decisions.push(series);
                m.decisions.len() - 1
            }
        };
        m.decisions[i].total += 1;
        let secs = latency.as_secs_f64();
        for (bucket, bound) in m.latency_buckets.iter_mut().zip(LATENCY_BUCKETS_S) {
            if secs <= bound {
                *bucket += 1;
            }
        }
        m.latency_sum_s += secs;
        m.latency_count += 1;
        let pending = &mut m.decisions[i].pending;
        pending.count += 1;
        let ms = secs * 1_000.0;
        if pending.samples.len() < EMF_MAX_VALUES {
            pending.samples.push(ms);
        } else {
            // Reservoir sampling: every decision equally likely to be among the values sent.
            let slot = rand::random_range(0..pending.count);
            if let Some(s) = pending.samples.get_mut(slot as usize) {
                *s = ms;
            }
        }
    }

    /// One webhook delivery answered: the outcome (`applied`, `duplicate`, ...) or the error code.
    pub fn webhook(&self, outcome: &str) {
        let mut m = self.lock();
        *m.webhook_events.entry(outcome.to_owned()).or_default() += 1;
        *m.pending_webhook.entry(outcome.to_owned()).or_default() += 1;
    }

    /// One rollup run: its status and its [`ROLLUP_COUNTERS`] (one EMF line per run: runs are
    /// rare, and the rollup Lambda flushes after each).
    pub fn rollup(&self, status: &str, counts: [u64; ROLLUP_COUNTERS.len()], duration_ms: u64, now_ms: i64) {
        let mut m = self.lock();
        *m.rollup_runs.entry(status.to_owned()).or_default() += 1;
        for (name, n) in ROLLUP_COUNTERS.iter().zip(counts) {
            *m.rollup_totals.entry(name).or_default() += n;
        }
        let mut metrics = vec![("RollupRuns", "Count"), ("RollupDuration", "Milliseconds")];
        let mut fields = serde_json::Map::new();
        fields.insert("Status".into(), status.into());
        fields.insert("RollupRuns".into(), 1.into());
        fields.insert("RollupDuration".into(), duration_ms.into());
        let names =
            ["KeyDaysRolled", "KeysSettled", "KeysDeferred", "EventsAccepted", "UnitsReported", "UnitsUnbilled"];
        for (name, n) in names.into_iter().zip(counts) {
            metrics.push((name, "Count"));
            fields.insert(name.into(), n.into());
        }
        let line = emf_line(now_ms, &["Status"], &metrics, fields);
        // The local stack never flushes: keep only the latest runs' lines.
        if m.pending_rollup.len() >= 100 {
            m.pending_rollup.remove(0);
        }
        m.pending_rollup.push(line);
    }

    /// The EMF lines of what was counted since the last flush, if this is the first flush or
    /// [`EMF_FLUSH_EVERY_MS`] has passed (or `force`); nothing otherwise.
    pub fn emf_due(&self, now_ms: i64, force: bool) -> Vec<String> {
        let mut m = self.lock();
        // The first invocation of a container flushes: one that serves a single request and is
        // reclaimed still reports it.
        let due = force || m.last_flush_ms.is_none_or(|last| now_ms - last >= EMF_FLUSH_EVERY_MS);
        if !due {
            return vec![];
        }
        m.last_flush_ms = Some(now_ms);
        let mut lines = std::mem::take(&mut m.pending_rollup);
        m.decisions.sort_by(|a, b| (&a.outcome, &a.plan).cmp(&(&b.outcome, &b.plan)));
        for series in m.decisions.iter_mut().filter(|s| s.pending.count > 0) {
            let p = std::mem::take(&mut series.pending);
            let mut fields = serde_json::Map::new();
            fields.insert("Outcome".into(), series.outcome.clone().into());
            fields.insert("Plan".into(), series.plan.clone().into());
            fields.insert("Decisions".into(), p.count.into());
            fields.insert("DecisionLatency".into(), p.samples.into());
            let metrics = [("Decisions", "Count"), ("DecisionLatency", "Milliseconds")];
            lines.push(emf_line(now_ms, &["Outcome", "Plan"], &metrics, fields));
        }
        for (outcome, n) in std::mem::take(&mut m.pending_webhook) {
            let mut fields = serde_json::Map::new();
            fields.insert("Outcome".into(), outcome.into());
            fields.insert("WebhookEvents".into(), n.into());
            lines.push(emf_line(now_ms, &["Outcome"], &[("WebhookEvents", "Count")], fields));
        }
        lines
    }

    /// Everything counted since the process started, in the Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        let mut m = self.lock();
        m.decisions.sort_by(|a, b| (&a.outcome, &a.plan).cmp(&(&b.outcome, &b.plan)));
        let mut out = String::new();
        family(&mut out, "tollgate_decisions_total", "counter", "Authorization decisions by outcome code and plan.");
        for s in &m.decisions {
            let (outcome, plan, n) = (esc(&s.outcome), esc(&s.plan), s.total);
            let _ = writeln!(out, "tollgate_decisions_total{{outcome=\"{outcome}\",plan=\"{plan}\"}} {n}");
        }
        family(&mut out, "tollgate_decision_duration_seconds", "histogram", "Authorization decision latency.");
        for (bound, n) in LATENCY_BUCKETS_S.iter().zip(m.latency_buckets) {
            let _ = writeln!(out, "tollgate_decision_duration_seconds_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "tollgate_decision_duration_seconds_bucket{{le=\"+Inf\"}} {}", m.latency_count);
        let _ = writeln!(out, "tollgate_decision_duration_seconds_sum {}", m.latency_sum_s);
        let _ = writeln!(out, "tollgate_decision_duration_seconds_count {}", m.latency_count);
        family(&mut out, "tollgate_rollup_runs_total", "counter", "Usage rollup runs by status.");
        for (status, n) in &m.rollup_runs {
            let _ = writeln!(out, "tollgate_rollup_runs_total{{status=\"{}\"}} {n}", esc(status));
        }
        for name in ROLLUP_COUNTERS {
            let metric = format!("tollgate_rollup_{name}_total");
            family(&mut out, &metric, "counter", &format!("Usage rollup: {} over all runs.", name.replace('_', " ")));
            let _ = writeln!(out, "{metric} {}", m.rollup_totals.get(name).copied().unwrap_or(0));
        }
        family(&mut out, "tollgate_webhook_events_total", "counter", "Stripe webhook deliveries by outcome.");
        for (outcome, n) in &m.webhook_events {
            let _ = writeln!(out, "tollgate_webhook_events_total{{outcome=\"{}\"}} {n}", esc(outcome));
        }
        out
    }
}

/// Writes what is due to stdout, where Lambda sends it to CloudWatch Logs (`force`: all of
/// it, due or not).
pub fn flush_emf(force: bool) {
    for line in global().emf_due(now_ms(), force) {
        println!("{line}");
    }
}

/// Milliseconds since the epoch (EMF timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One EMF document: `fields` holds the dimension values and the metric values.
fn emf_line(
    now_ms: i64,
    dimensions: &[&str],
    metrics: &[(&str, &str)],
    mut fields: serde_json::Map<String, serde_json::Value>,
) -> String {
    let definitions: Vec<_> =
        metrics.iter().map(|(name, unit)| serde_json::json!({"Name": name, "Unit": unit})).collect();
    fields.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [dimensions], "Metrics": definitions}],
        }),
    );
    serde_json::Value::Object(fields).to_string()
}

/// A metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn emf_lines_are_documents_cloudwatch_accepts_and_come_at_most_every_interval() {
        let m = Metrics::default();
        m.decision("ok", Some("pro"), Duration::from_millis(1));
        assert_eq!(m.emf_due(0, false).len(), 1, "a container's first invocation flushes");
        assert!(m.emf_due(1, false).is_empty(), "then not before the interval");
        for i in 0..250u64 {
            m.decision("ok", Some("pro"), Duration::from_micros(1_000 + i));
        }
        assert!(m.emf_due(EMF_FLUSH_EVERY_MS - 1, false).is_empty(), "not yet due");
        m.decision("rate_limited", None, Duration::from_millis(3));
        m.webhook("applied");
        let lines = m.emf_due(EMF_FLUSH_EVERY_MS, false);
        assert_eq!(lines.len(), 3);
        let docs: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let ok = &docs[0];
        assert_eq!(
            (ok["Outcome"].as_str(), ok["Plan"].as_str(), ok["Decisions"].as_u64()),
            (Some("ok"), Some("pro"), Some(250))
        );
        let values = ok["DecisionLatency"].as_array().unwrap();
        assert_eq!(values.len(), EMF_MAX_VALUES, "EMF's limit; the count stays exact");
        assert!(values.iter().all(|v| (1.0..1.25).contains(&v.as_f64().unwrap())));
        let aws = &ok["_aws"];
        assert_eq!(aws["Timestamp"], EMF_FLUSH_EVERY_MS);
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], serde_json::json!([["Outcome", "Plan"]]));
        // Every dimension and metric named in the directive is a member of the document.
        for d in directive["Dimensions"][0].as_array().unwrap() {
            assert!(ok.get(d.as_str().unwrap()).is_some_and(Value::is_string));
        }
        for metric in directive["Metrics"].as_array().unwrap() {
            assert!(ok.get(metric["Name"].as_str().unwrap()).is_some());
        }
        assert_eq!(docs[1]["Plan"], "none");
        assert_eq!((docs[2]["Outcome"].as_str(), docs[2]["WebhookEvents"].as_u64()), (Some("applied"), Some(1)));
        assert!(m.emf_due(3 * EMF_FLUSH_EVERY_MS, false).is_empty(), "nothing new, nothing written");
    }

    #[test]
    fn prometheus_text_is_cumulative_and_escaped() {
        let m = Metrics::default();
        m.decision("ok", Some("pro"), Duration::from_micros(700));
        m.decision("ok", Some("pro"), Duration::from_millis(30));
        m.decision("quota_exceeded", Some("a\"b"), Duration::from_millis(3));
        let _ = m.emf_due(0, true);
        m.rollup("completed", [2, 1, 0, 1, 5, 0], 12, 0);
        let lines = m.emf_due(1, true);
        assert_eq!(lines.len(), 1, "only the run: the decisions were flushed");
        let doc: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!((doc["Status"].as_str(), doc["UnitsReported"].as_u64()), (Some("completed"), Some(5)));
        m.webhook("duplicate");
        let text = m.prometheus();
        assert!(text.contains("tollgate_decisions_total{outcome=\"ok\",plan=\"pro\"} 2\n"), "{text}");
        assert!(text.contains("tollgate_decisions_total{outcome=\"quota_exceeded\",plan=\"a\\\"b\"} 1\n"));
        assert!(text.contains("tollgate_decision_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("tollgate_decision_duration_seconds_bucket{le=\"0.05\"} 3\n"));
        assert!(text.contains("tollgate_decision_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("tollgate_decision_duration_seconds_count 3\n"));
        assert!(text.contains("tollgate_rollup_runs_total{status=\"completed\"} 1\n"));
        assert!(text.contains("tollgate_rollup_units_reported_total 5\n"));
        assert!(text.contains("tollgate_webhook_events_total{outcome=\"duplicate\"} 1\n"));
        // Every sample line belongs to a family declared before it.
        let mut declared = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
                assert!(declared.contains(name) || declared.contains(base), "{l}");
            }
        }
    }
}
