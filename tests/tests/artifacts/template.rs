//! The SAM template's table is the table the code creates: the same keys, indexes, projections
//! and TTL attribute as `DynamoStore::create_table_if_missing` (read back with DescribeTable).
//! A layout change that misses infra/template.yaml fails here, not on a first deploy.

use serde_yaml::Value;
use std::collections::BTreeSet;
use tollgate_tests::fresh_db;

/// (index name, [(attribute, key type)], projection type, sorted non-key attributes)
type Index = (String, Vec<(String, String)>, String, BTreeSet<String>);

fn template_table() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml")).unwrap();
    let template: Value = serde_yaml::from_str(&text).unwrap();
    template["Resources"]["Table"]["Properties"].clone()
}

fn key_schema(v: &Value) -> Vec<(String, String)> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|k| (k["AttributeName"].as_str().unwrap().to_owned(), k["KeyType"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn the_templates_table_is_the_table_the_code_creates() {
    let t = template_table();
    assert_eq!(t["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(t["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true);
    assert_eq!(t["TimeToLiveSpecification"]["AttributeName"], shared::store::schema::TTL);

    let db = fresh_db().await;
    let described = db.store.client().describe_table().table_name(&db.table).send().await.unwrap();
    let table = described.table.unwrap();

    let mut attrs: Vec<(String, String)> = table
        .attribute_definitions()
        .iter()
        .map(|a| (a.attribute_name().to_owned(), a.attribute_type().as_str().to_owned()))
        .collect();
    let mut template_attrs: Vec<(String, String)> = t["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| (a["AttributeName"].as_str().unwrap().to_owned(), a["AttributeType"].as_str().unwrap().to_owned()))
        .collect();
    attrs.sort();
    template_attrs.sort();
    assert_eq!(template_attrs, attrs, "AttributeDefinitions");

    let table_keys: Vec<(String, String)> =
        table.key_schema().iter().map(|k| (k.attribute_name().to_owned(), k.key_type().as_str().to_owned())).collect();
    assert_eq!(key_schema(&t["KeySchema"]), table_keys, "KeySchema");

    let mut created: Vec<Index> = table
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            let p = g.projection().unwrap();
            (
                g.index_name().unwrap().to_owned(),
                g.key_schema()
                    .iter()
                    .map(|k| (k.attribute_name().to_owned(), k.key_type().as_str().to_owned()))
                    .collect(),
                p.projection_type().unwrap().as_str().to_owned(),
                p.non_key_attributes().iter().cloned().collect(),
            )
        })
        .collect();
    let mut declared: Vec<Index> = t["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|g| {
            let p = &g["Projection"];
            let non_key = p["NonKeyAttributes"]
                .as_sequence()
                .map(|s| s.iter().map(|a| a.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            (
                g["IndexName"].as_str().unwrap().to_owned(),
                key_schema(&g["KeySchema"]),
                p["ProjectionType"].as_str().unwrap().to_owned(),
                non_key,
            )
        })
        .collect();
    created.sort();
    declared.sort();
    assert_eq!(declared, created, "GlobalSecondaryIndexes");
}

fn template() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// The value under a CloudFormation short-form tag (`!Sub`, `!If`, ...), checked to be that tag.
fn tagged<'a>(v: &'a Value, tag: &str) -> &'a Value {
    match v {
        Value::Tagged(t) if t.tag == tag => &t.value,
        other => panic!("expected {tag}, got {other:?}"),
    }
}

/// The console in AWS: every `/console` path of the token API goes to the console function, which
/// has no permissions beyond its logs, and both of its configurations (with and without an OIDC
/// client) are ones the console accepts once CloudFormation substitutes the parameters.
#[test]
fn the_console_is_served_beside_the_token_api() {
    let t = template();
    let r = &t["Resources"];
    let f = &r["ConsoleFunction"];
    assert_eq!(f["Condition"], "HasJwt");
    assert_eq!(f["Metadata"]["BuildProperties"]["Binary"], "console");
    assert_eq!(f["Properties"]["CodeUri"], "../functions/console");
    assert!(f["Properties"].get("Policies").is_none(), "the console reads nothing and calls nothing");

    let api = &r["TokenApi"]["Properties"];
    // Vite's base is the absolute /console/: only the $default stage (no StageName) serves it there.
    assert!(api.get("StageName").is_none());
    let paths = &api["DefinitionBody"]["paths"];
    for p in ["/console", "/console/{proxy+}"] {
        let uri = tagged(&paths[p]["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]["uri"], "!Sub");
        assert!(uri.as_str().unwrap().contains("/functions/${ConsoleFunction.Arn}/invocations"), "{p}: {uri:?}");
    }
    let source = tagged(&r["ConsolePermission"]["Properties"]["SourceArn"], "!Sub").as_str().unwrap();
    assert!(source.ends_with("${TokenApi}/*/*/console*"), "{source}");
    let vite = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../console/vite.config.ts")).unwrap();
    assert!(vite.contains("base: '/console/'"), "the SPA's base must be the path the template routes");

    let config = tagged(&f["Properties"]["Environment"]["Variables"]["TOLLGATE_CONSOLE_CONFIG"], "!If");
    let [cond, with_oidc, without] = config.as_sequence().unwrap().as_slice() else { panic!("!If [c, a, b]") };
    assert_eq!(cond, "HasConsoleOidc");
    let substitute = |v: &Value, connect: &str| {
        let mut s = tagged(v, "!Sub").as_str().unwrap().to_owned();
        for (name, value) in [
            ("JwtIssuer", "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Ab12"),
            ("ConsoleClientId", "4l1ent"),
            ("ConsoleTokenUse", "id_token"),
            ("ConsoleScope", "openid email"),
            ("JwtRoleClaim", "cognito:groups"),
            ("ConsoleConnectSrc", connect),
        ] {
            s = s.replace(&format!("${{{name}}}"), value);
        }
        assert!(!s.contains("${"), "every reference is a parameter: {s}");
        s
    };
    for connect in ["", "https://tollgate.auth.eu-west-1.amazoncognito.com"] {
        let json = substitute(with_oidc, connect);
        console::Console::from_config(Some(&json)).unwrap_or_else(|e| panic!("{json}: {e}"));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["oidc"]["client_id"], "4l1ent");
        assert_eq!(v["role_claim"], "cognito:groups");
    }
    let json = substitute(without, "");
    console::Console::from_config(Some(&json)).unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&json).unwrap().get("oidc").is_none());
}
