//! The `tollgate` command line: `tollgate dev` runs the local stack; the other commands call
//! the management API over HTTP (tollgate-client), printing tables for people and the API's
//! JSON with `--json`.

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::process::ExitCode;
use tollgate_client::{Auth, Client, Error, KeyFilter};

mod output;
use output::*;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:3000";

/// Exit codes: what a script can tell apart.
pub mod exit {
    /// The API refused (a 4xx: not found, conflict, invalid, unauthorized, ...).
    pub const REFUSED: u8 = 1;
    /// The command line was wrong (clap's own code), or SigV4 found no credentials or region.
    pub const USAGE: u8 = 2;
    /// The API failed or answered something unexpected (a 5xx, or not the documented shape).
    pub const SERVER: u8 = 3;
    /// The endpoint could not be reached.
    pub const UNREACHABLE: u8 = 4;
}

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Tollgate: API keys, limits and billing in front of an HTTP API",
    after_help = "Exit codes: 0 done, 1 the API refused (4xx), 2 bad command line (or no AWS credentials for SigV4), 3 the API failed (5xx), 4 unreachable.\n\
                  Run `tollgate dev --seed` for a local stack on http://127.0.0.1:3000."
)]
pub struct Cli {
    /// The management API's base URL.
    #[arg(long, global = true, env = "TOLLGATE_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// Bearer token: the local stack's admin token or a JWT from the identity provider (else
    /// TOLLGATE_ADMIN_TOKEN). Prefer the variable: a flag shows in `ps` and shell history.
    #[arg(long, global = true, env = "TOLLGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Sign requests with AWS SigV4 for the IAM-authorized management API (ManagementApiUrl),
    /// with credentials from the standard AWS chain (environment, shared config and credentials
    /// files, web identity, container and instance roles). Implied by an execute-api endpoint
    /// when no token is given.
    #[arg(long, global = true, env = "TOLLGATE_SIGV4", conflicts_with = "token")]
    pub sigv4: bool,
    /// The API's AWS region for SigV4 (else the endpoint's execute-api host, else AWS_REGION
    /// or the profile's region).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// The AWS shared-config profile for SigV4 (else AWS_PROFILE, else default).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the local stack: every handler behind one server, on embedded DynamoDB.
    Dev {
        /// Create a demo plan (5 requests a minute, 1,000 a day) and print a demo key.
        #[arg(long)]
        seed: bool,
    },
    /// Plans: limits, Stripe prices, Billing Meter.
    #[command(subcommand)]
    Plans(PlanCommand),
    /// API keys.
    #[command(subcommand)]
    Keys(KeyCommand),
    /// Customers: billing state, keys, metered usage.
    #[command(subcommand)]
    Customers(CustomerCommand),
    /// A key's live window and quota, and its daily history.
    Usage {
        key_id: String,
        #[arg(long)]
        days: Option<u32>,
    },
    /// Requests per day across every key, top keys and customers, keys near their quota.
    Stats {
        #[arg(long)]
        days: Option<u32>,
    },
    /// Run the usage rollup now (the local stack's POST /internal/rollup).
    Rollup,
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    List,
    Get {
        plan_id: String,
    },
    Create(PlanCreate),
    /// Refused (409) while a key uses the plan.
    Delete {
        plan_id: String,
    },
}

#[derive(Debug, Args)]
pub struct PlanCreate {
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub name: String,
    /// Requests per window, as LIMIT/WINDOW_SECONDS (e.g. 100/60).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<(u64, u64)>,
    /// Requests per period, as LIMIT/day or LIMIT/month (e.g. 10000/month).
    #[arg(long, value_parser = parse_quota)]
    pub quota: Option<(u64, String)>,
    /// The Stripe Billing Meter event name its allowed requests are reported to.
    #[arg(long)]
    pub meter: Option<String>,
    /// A Stripe price id that buys the plan (repeatable).
    #[arg(long = "price")]
    pub prices: Vec<String>,
    /// How many keys a customer on the plan may hold when it creates its own.
    #[arg(long)]
    pub max_keys: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    List {
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        plan: Option<String>,
        /// active, disabled or revoked.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        /// The next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    Get {
        key_id: String,
    },
    /// A new key; its plaintext is printed once.
    Create {
        #[arg(long)]
        customer: String,
        /// Its own plan (else its customer's).
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// live or test.
        #[arg(long)]
        env: Option<String>,
        /// A scope the key holds (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// A new secret; the old one keeps working for the grace period.
    Rotate {
        key_id: String,
        #[arg(long)]
        grace_s: Option<u64>,
    },
    Disable {
        key_id: String,
    },
    Enable {
        key_id: String,
    },
    /// Permanent.
    Revoke {
        key_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    Get {
        customer_id: String,
    },
    /// Per day and Billing Meter, as of the last rollup.
    Usage {
        customer_id: String,
        #[arg(long)]
        days: Option<u32>,
    },
}

fn parse_rate(s: &str) -> Result<(u64, u64), String> {
    let (limit, window) = s.split_once('/').ok_or("expected LIMIT/WINDOW_SECONDS, e.g. 100/60")?;
    let n = |v: &str| v.trim().parse::<u64>().map_err(|_| format!("`{v}` is not a whole number"));
    Ok((n(limit)?, n(window)?))
}

fn parse_quota(s: &str) -> Result<(u64, String), String> {
    let (limit, period) = s.split_once('/').ok_or("expected LIMIT/day or LIMIT/month, e.g. 10000/month")?;
    let limit = limit.trim().parse::<u64>().map_err(|_| format!("`{limit}` is not a whole number"))?;
    match period.trim() {
        p @ ("day" | "month") => Ok((limit, p.to_owned())),
        p => Err(format!("the period is day or month, not `{p}`")),
    }
}

/// Runs an API command (anything but `dev`), printing its result or its error; the exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let auth = match auth(&cli).await {
        Ok(auth) => auth,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let client = match Client::new(&cli.endpoint, auth) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match execute(&client, &cli.command, cli.json).await {
        Ok(out) => {
            // A closed pipe (`tollgate keys list | head -1`) is not an error worth a panic.
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// How the calls authenticate: a token (`--token`, else TOLLGATE_ADMIN_TOKEN), or SigV4 when
/// asked for or when the endpoint is an execute-api host and there is no token.
async fn auth(cli: &Cli) -> Result<Auth, String> {
    let explicit = cli.token.clone().filter(|t| !t.is_empty());
    let sigv4 = cli.sigv4 || (explicit.is_none() && execute_api_region(&cli.endpoint).is_some());
    if !sigv4 {
        let token = explicit.or_else(|| std::env::var("TOLLGATE_ADMIN_TOKEN").ok()).filter(|t| !t.is_empty());
        return Ok(token.map_or(Auth::None, |t| Auth::Bearer(SecretString::from(t))));
    }
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(shared::http_client::sdk_http_client());
    if let Some(profile) = &cli.profile {
        loader = loader.profile_name(profile);
    }
    let config = loader.load().await;
    let region = cli
        .region
        .clone()
        .or_else(|| execute_api_region(&cli.endpoint))
        .or_else(|| config.region().map(|r| r.to_string()))
        .ok_or("SigV4 needs the API's region: pass --region or set AWS_REGION")?;
    let credentials = config.credentials_provider().ok_or("SigV4: no AWS credential provider is configured")?;
    Ok(Auth::SigV4 { credentials, region })
}

/// `https://abc123.execute-api.eu-west-1.amazonaws.com/v1/` → `eu-west-1`.
fn execute_api_region(endpoint: &str) -> Option<String> {
    let host = endpoint.split_once("://")?.1.split(['/', ':', '?']).next()?;
    let mut labels = host.split('.');
    let (_, service, region) = (labels.next()?, labels.next()?, labels.next()?);
    let rest: Vec<&str> = labels.collect();
    let aws = matches!(rest.as_slice(), ["amazonaws", "com"] | ["amazonaws", "com", "cn"]);
    (service == "execute-api" && aws && !region.is_empty()).then(|| region.to_owned())
}

fn fail(e: &Error) -> ExitCode {
    let code = match e {
        Error::Api { status, code, message, request_id } => {
            let id = request_id.as_deref().map(|r| format!(", request {r}")).unwrap_or_default();
            eprintln!("error: {code}: {message} (HTTP {status}{id})");
            if *status >= 500 { exit::SERVER } else { exit::REFUSED }
        }
        Error::Transport { .. } => {
            eprintln!("error: {e}");
            exit::UNREACHABLE
        }
        Error::Decode { .. } => {
            eprintln!("error: {e}");
            exit::SERVER
        }
        Error::Credentials { .. } | Error::Endpoint { .. } => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    };
    ExitCode::from(code)
}

/// What the command prints on success.
pub async fn execute(c: &Client, command: &Command, as_json: bool) -> Result<String, Error> {
    let json_out = |v: &Value| format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default());
    macro_rules! out {
        ($value:expr, $table:expr) => {{
            let value = $value;
            if as_json { json_out(&serde_json::to_value(&value).unwrap_or_default()) } else { $table(&value) }
        }};
    }
    // One plan or key: its JSON object, or a table of one row.
    macro_rules! one {
        ($value:expr, $table:expr) => {{
            let value = $value;
            if as_json {
                json_out(&serde_json::to_value(&value).unwrap_or_default())
            } else {
                $table(std::slice::from_ref(&value))
            }
        }};
    }
    Ok(match command {
        Command::Dev { .. } => unreachable!("`tollgate dev` runs the local stack, not an API call"),
        Command::Plans(PlanCommand::List) => out!(c.list_plans().await?.items, plans_table),
        Command::Plans(PlanCommand::Get { plan_id }) => one!(c.get_plan(plan_id).await?, plans_table),
        Command::Plans(PlanCommand::Create(p)) => {
            let mut body = json!({ "id": p.id, "name": p.name, "stripe_price_ids": p.prices });
            if let Some((limit, window_s)) = p.rate {
                body["rate_limit"] = json!({ "limit": limit, "window_s": window_s });
            }
            if let Some((limit, period)) = &p.quota {
                body["quota"] = json!({ "limit": limit, "period": period });
            }
            if let Some(m) = &p.meter {
                body["meter_event_name"] = json!(m);
            }
            if let Some(n) = p.max_keys {
                body["max_keys"] = json!(n);
            }
            one!(c.create_plan(&body).await?, plans_table)
        }
        Command::Plans(PlanCommand::Delete { plan_id }) => {
            c.delete_plan(plan_id).await?;
            if as_json { json_out(&json!({ "deleted": plan_id })) } else { format!("deleted plan {plan_id}\n") }
        }
        Command::Keys(KeyCommand::List { customer, plan, status, limit, cursor }) => {
            let filter = KeyFilter {
                customer_id: customer.clone(),
                plan_id: plan.clone(),
                status: status.clone(),
                limit: *limit,
                cursor: cursor.clone(),
            };
            let page = c.list_keys(&filter).await?;
            if as_json {
                json_out(&serde_json::to_value(&page).unwrap_or_default())
            } else {
                let mut s = keys_table(&page.items);
                if let Some(next) = &page.next_cursor {
                    s.push_str(&format!("more: --cursor {next}\n"));
                }
                s
            }
        }
        Command::Keys(KeyCommand::Get { key_id }) => one!(c.get_key(key_id).await?, keys_table),
        Command::Keys(KeyCommand::Create { customer, plan, name, env, scopes }) => {
            let mut body = json!({ "customer_id": customer });
            for (field, v) in [("plan_id", plan), ("name", name), ("env", env)] {
                if let Some(v) = v {
                    body[field] = json!(v);
                }
            }
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            let issued = c.create_key(&body).await?;
            out!(issued, |k: &tollgate_client::IssuedKey| issued_text(k, "created"))
        }
        Command::Keys(KeyCommand::Rotate { key_id, grace_s }) => {
            let issued = c.rotate_key(key_id, *grace_s).await?;
            out!(issued, |k: &tollgate_client::IssuedKey| issued_text(k, "rotated"))
        }
        Command::Keys(KeyCommand::Disable { key_id }) => {
            one!(c.update_key(key_id, &json!({ "status": "disabled" })).await?, keys_table)
        }
        Command::Keys(KeyCommand::Enable { key_id }) => {
            one!(c.update_key(key_id, &json!({ "status": "active" })).await?, keys_table)
        }
        Command::Keys(KeyCommand::Revoke { key_id }) => one!(c.revoke_key(key_id).await?, keys_table),
        Command::Customers(CustomerCommand::Get { customer_id }) => {
            out!(c.get_customer(customer_id).await?, customer_text)
        }
        Command::Customers(CustomerCommand::Usage { customer_id, days }) => {
            out!(c.customer_usage(customer_id, *days).await?, customer_usage_table)
        }
        Command::Usage { key_id, days } => out!(c.key_usage(key_id, *days).await?, usage_text),
        Command::Stats { days } => out!(c.stats(*days).await?, stats_text),
        Command::Rollup => {
            let report = c.run_rollup().await?;
            if as_json { json_out(&report) } else { rollup_text(&report) }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn limits_parse_or_say_why_not() {
        assert_eq!(parse_rate("100/60"), Ok((100, 60)));
        assert!(parse_rate("100").unwrap_err().contains("LIMIT/WINDOW_SECONDS"));
        assert!(parse_rate("x/60").unwrap_err().contains("`x`"));
        assert_eq!(parse_quota("10000/month"), Ok((10_000, "month".into())));
        assert!(parse_quota("5/week").unwrap_err().contains("day or month"));
    }

    #[test]
    fn the_region_is_read_from_an_execute_api_endpoint() {
        let r = |e: &str| execute_api_region(e);
        assert_eq!(r("https://abc123.execute-api.eu-west-1.amazonaws.com/v1/").as_deref(), Some("eu-west-1"));
        assert_eq!(r("https://abc123.execute-api.cn-north-1.amazonaws.com.cn").as_deref(), Some("cn-north-1"));
        assert_eq!(r("http://127.0.0.1:3000"), None);
        assert_eq!(r("https://api.example.com/v1"), None);
        assert_eq!(r("https://abc.execute-api.eu-west-1.amazonaws.com.evil.example/"), None);
    }
}
