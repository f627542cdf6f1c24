//! The CLI against the IAM-authorized management API: requests signed with AWS SigV4 from the
//! standard credential chain, checked by a stand-in for API Gateway's IAM authorization
//! (scripts/sigv4_gateway.py, which recomputes each signature with botocore, an implementation
//! independent of the aws-sigv4 crate) in front of a local stack. It needs the project's
//! .venv (`bash scripts/ensure-venv.sh`, which `make test` runs first).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tollgate_dev::LocalStack;

mod common;

const TOKEN: &str = "tga_sigv4_test_token_0123456789abcdef";
const ACCESS_KEY: &str = "TOLLGATE-TEST-ACCESS-KEY";
const SECRET: &str = "tollgate-test-secret-not-a-real-one";
const SESSION: &str = "tollgate-test-session+token/==";
const REGION: &str = "eu-west-1";

async fn stack() -> LocalStack {
    common::stack(TOKEN).await
}

/// The gateway stand-in, killed when dropped.
struct Gateway {
    child: Child,
    url: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn gateway(upstream: &str) -> Gateway {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/ensure-venv.sh` (make test does) for botocore",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(root().join("scripts/sigv4_gateway.py"))
        .args([upstream, TOKEN, REGION])
        .env("GATEWAY_ACCESS_KEY_ID", ACCESS_KEY)
        .env("GATEWAY_SECRET_ACCESS_KEY", SECRET)
        .env("GATEWAY_SESSION_TOKEN", SESSION)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the gateway stand-in");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("the gateway printed {line:?}, not its port"));
    // As the stack's ManagementApiUrl output prints it.
    Gateway { child, url: format!("http://127.0.0.1:{port}/v1/") }
}

/// `tollgate <args>` with no token and only the AWS settings given: the user's own
/// configuration files and instance metadata are out of reach.
async fn tollgate(home: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(args);
    for var in [
        "TOLLGATE_ADMIN_TOKEN",
        "TOLLGATE_TOKEN",
        "TOLLGATE_ENDPOINT",
        "TOLLGATE_SIGV4",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd.envs(env.iter().copied());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run tollgate")).await.unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8 output");
    (out.status.code().expect("an exit code"), text(out.stdout), text(out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_signs_its_calls_with_sigv4_from_the_credential_chain() {
    let stack = stack().await;
    let gw = gateway(&stack.url());
    let home = std::env::temp_dir().join(format!("tollgate-sigv4-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let endpoint = gw.url.as_str();
    let env_credentials = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_SESSION_TOKEN", SESSION),
        ("AWS_REGION", REGION),
    ];

    // A POST with a body (its hash is signed), from the environment's temporary credentials.
    let (code, out, err) = tollgate(
        &home,
        &env_credentials,
        &[
            "--endpoint",
            endpoint,
            "--sigv4",
            "plans",
            "create",
            "--id",
            "signed",
            "--name",
            "Signed plan",
            "--rate",
            "5/60",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"], "signed");

    // A query string with characters SigV4 encodes (the canonical query must match).
    let args = ["--endpoint", endpoint, "--sigv4", "keys", "list", "--customer", "cus:a@b.c", "--limit", "5", "--json"];
    let (code, out, err) = tollgate(&home, &env_credentials, &args).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["items"], serde_json::json!([]), "{out}");

    // From a named profile in the shared credentials file; the region from --region.
    std::fs::write(
        home.join("credentials"),
        format!(
            "[ops]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET}\naws_session_token = {SESSION}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = tollgate(
        &home,
        &[],
        &["--endpoint", endpoint, "--sigv4", "--profile", "ops", "--region", REGION, "plans", "list", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["id"], "signed", "{out}");

    // A wrong secret: API Gateway's 403, printed with its message; exit 1 (refused).
    let mut wrong = env_credentials;
    wrong[1].1 = "not-the-secret";
    let (code, _, err) = tollgate(&home, &wrong, &["--endpoint", endpoint, "--sigv4", "plans", "list"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("forbidden: The request signature we calculated does not match"), "{err}");
    assert!(err.contains("HTTP 403"), "{err}");

    // Signed for another region: refused too.
    let args = ["--endpoint", endpoint, "--sigv4", "--region", "us-east-1", "plans", "list"];
    let (code, _, err) = tollgate(&home, &env_credentials, &args).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("scoped to a valid region"), "{err}");

    // No credentials anywhere: exit 2, saying so, and nothing sent.
    let (code, _, err) =
        tollgate(&home, &[("AWS_REGION", REGION)], &["--endpoint", endpoint, "--sigv4", "plans", "list"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("AWS credentials"), "{err}");

    // No region: exit 2, naming --region.
    let (code, _, err) =
        tollgate(&home, &env_credentials[..3], &["--endpoint", endpoint, "--sigv4", "plans", "list"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--region"), "{err}");

    // A token and --sigv4 together are a usage error.
    let (code, _, err) =
        tollgate(&home, &env_credentials, &["--endpoint", endpoint, "--sigv4", "--token", "x", "plans", "list"]).await;
    assert_eq!(code, 2, "{err}");

    // A bearer token is not a signature: API Gateway refuses it.
    let (code, _, err) =
        tollgate(&home, &[("TOLLGATE_TOKEN", TOKEN)], &["--endpoint", endpoint, "plans", "list"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("requires 'Credential'"), "{err}");
    let _ = std::fs::remove_dir_all(&home);
}
