//! One hot key on the hot-partition simulator (tests/src/hot.rs): 10,000 requests a second
//! from 50 containers for 60 simulated seconds beside 1,000 ordinary keys, through the fault
//! proxy enforcing 1,000 write units a second per item; then the same key under a limit that
//! binds (over-admissions), and with containers that crash (billing drift).

use crate::{Row, row};
use tollgate_tests::hot::{HotConfig, HotReport, run};

fn sustained() -> HotConfig {
    HotConfig::ten_thousand_a_second(60, 1_000, 10)
}

async fn one(config: &HotConfig) -> HotReport {
    let db = tollgate_tests::fresh_db().await;
    run(&db, config).await
}

pub async fn rows() -> Vec<Row> {
    let mut rows = vec![];
    let c = sustained();
    let r = one(&c).await;
    let decisions = r.hot_allowed + r.hot_denied;
    let per_s = r.hot_allowed as f64 / c.seconds as f64;
    rows.push(row(
        format!(
            "hot key: allowed requests a second, sustained ({} s simulated, {} containers, {} ordinary keys beside; {:.1} s wall)",
            c.seconds,
            c.containers,
            c.ordinary_keys,
            r.wall.as_secs_f64()
        ),
        format!("{per_s:.0} ({} of {decisions} allowed){}", r.hot_allowed, crate::verdict(per_s >= 10_000.0)),
        ">= 10,000",
    ));
    let per_million = r.hot_writes as f64 * 1e6 / decisions.max(1) as f64;
    rows.push(row(
        "hot key: DynamoDB write requests per million decisions",
        format!("{per_million:.0} ({:.4} a decision){}", per_million / 1e6, crate::verdict(per_million <= 100_000.0)),
        "<= 100,000 (0.1 a decision)",
    ));
    let ordinary_per = r.ordinary_writes as f64 / r.ordinary_allowed.max(1) as f64;
    let steady = (r.ordinary_writes - c.ordinary_keys as u64) as f64 / r.ordinary_allowed.max(1) as f64;
    rows.push(row(
        "ordinary keys: DynamoDB write requests per allowed decision (steady state: less each key's first-window rollover)",
        format!("{ordinary_per:.3} ({steady:.3}; {} decisions){}", r.ordinary_allowed, crate::verdict(steady == 1.0)),
        "exactly 1",
    ));
    rows.push(row(
        "throttles (ProvisionedThroughputExceeded) on the simulator: hot key / ordinary keys",
        format!("{} / {}", r.hot_throttled, r.ordinary_throttled),
        "",
    ));
    rows.push(row(
        "billing drift, no crash: allowed minus billed",
        format!("{}{}", r.hot_allowed as i64 - r.billed as i64, crate::verdict(r.hot_allowed == r.billed)),
        "0",
    ));

    // A limit that binds: 300,000 a minute against 600,000 asked.
    let c = HotConfig { limit: (300_000, 60), seconds: 120, ordinary_keys: 0, ..sustained() };
    let r = one(&c).await;
    let over: u64 = r.allowed_per_window.values().map(|&a| a.saturating_sub(c.limit.0)).sum();
    let under: u64 = r.allowed_per_window.values().map(|&a| c.limit.0.saturating_sub(a)).sum();
    let per_million = r.hot_writes as f64 * 1e6 / (r.hot_allowed + r.hot_denied).max(1) as f64;
    rows.push(row(
        format!(
            "hot key over its limit (300,000 a minute, 600,000 asked, {} windows): over-admissions / under-admissions",
            r.allowed_per_window.len()
        ),
        format!("{over} / {under}{}", crate::verdict(over == 0)),
        "0 over-admissions",
    ));
    rows.push(row(
        "hot key over its limit: write requests per million decisions (denials answered from memory)",
        format!("{per_million:.0}"),
        "",
    ));

    // Containers that crash (no SIGTERM): what they admitted and had not counted.
    let c = HotConfig { seconds: 10, crashed: 10, ordinary_keys: 0, ..sustained() };
    let r = one(&c).await;
    rows.push(row(
        "billing drift with 10 of 50 containers crashed: allowed, never billed (at most one block each)",
        format!(
            "{} of {} ({:.0} a crashed container){}",
            r.hot_allowed - r.billed,
            r.hot_allowed,
            (r.hot_allowed - r.billed) as f64 / 10.0,
            crate::verdict(r.billed + r.unsettled_by_crashed == r.hot_allowed)
        ),
        "<= 1 block (1,000) a crashed container, never over-billed",
    ));
    rows
}
