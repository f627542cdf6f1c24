//! The local stack on a data directory keeps every write it acknowledged when its process is
//! killed (`kill -9`, no chance to settle or flush anything): plans, keys, and the requests
//! each counting write admitted. The `tollgate` binary as a user runs it, then again on the same
//! directory.

use crate::logs::binary;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use tollgate_tests::{ADMIN_TOKEN, Client};

/// `tollgate dev` on a free port and `dir`; the child and its URL once it listens.
fn start(dir: &Path) -> (Child, String) {
    let mut child = Command::new(binary("tollgate"))
        .arg("dev")
        .env("TOLLGATE_ADDR", "127.0.0.1:0")
        .env("TOLLGATE_DATA_DIR", dir)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TOLLGATE_ROLLUP_INTERVAL_S", "0")
        .env_remove("TOLLGATE_DYNAMODB_ENDPOINT")
        .env_remove("TOLLGATE_STORAGE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tollgate dev");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("listening on ").map(|(_, url)| url.trim().to_owned()))
        .expect("tollgate dev printed where it listens");
    // Keep reading what it prints, so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, url)
}

async fn allowed_today(c: &Client, key_id: &str) -> u64 {
    let usage = c.admin("GET", &format!("/v1/keys/{key_id}/usage"), None).await;
    assert_eq!(usage.status, 200, "{:?}", usage.body);
    usage.body["history"].as_array().unwrap().iter().map(|d| d["allowed"].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_the_local_stack_acknowledged_survives_kill_9() {
    let dir = std::env::temp_dir().join(format!("tollgate-durability-{}", uuid::Uuid::new_v4().simple()));
    let (mut child, url) = start(&dir);
    let c = Client::new(&url);
    let plan = serde_json::json!({ "id": "durable", "name": "Durable", "quota": { "limit": 1000, "period": "day" } });
    assert_eq!(c.admin("POST", "/v1/plans", Some(plan)).await.status, 201);
    // Keys decided a few times each (never hot: every request is counted by its own write
    // before the answer), the last answer arriving just before the kill.
    let mut keys = vec![];
    for i in 0..12 {
        let body = serde_json::json!({ "customer_id": format!("c{i}"), "plan_id": "durable", "env": "test" });
        let r = c.admin("POST", "/v1/keys", Some(body)).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let (id, key) = (r.body["key_id"].as_str().unwrap().to_owned(), r.body["key"].as_str().unwrap().to_owned());
        for _ in 0..=i % 3 {
            assert_eq!(c.proxy("/hello", &key).await.status, 200);
        }
        keys.push((id, i % 3 + 1));
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let (mut child, url) = start(&dir);
    let c = Client::new(&url);
    assert_eq!(c.admin("GET", "/v1/plans/durable", None).await.status, 200, "the plan survived");
    for (id, admitted) in &keys {
        assert_eq!(c.admin("GET", &format!("/v1/keys/{id}"), None).await.status, 200, "key {id} survived");
        assert_eq!(allowed_today(&c, id).await, *admitted as u64, "key {id}: every admitted request still counted");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
