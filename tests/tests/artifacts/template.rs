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
