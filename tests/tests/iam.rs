//! Issue 16: the IAM policies in `deploy/iam/` grant exactly the S3 actions the code calls.
//! The S3 operations are found in the sources (every SDK operation is followed by `.bucket(`),
//! so a new call without a policy update fails here, as does a grant nothing uses.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::BTreeSet;

/// A path in the repository.
fn repo_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
}

/// The IAM actions each S3 operation needs, as the code calls it.
fn actions_of(op: &str) -> &'static [&'static str] {
    match op {
        // PutObject with S3_OBJECT_TAGS set needs PutObjectTagging too.
        "put_object" => &["s3:PutObject", "s3:PutObjectTagging"],
        "create_multipart_upload" | "upload_part" | "complete_multipart_upload" => {
            &["s3:PutObject", "s3:PutObjectTagging"]
        }
        "abort_multipart_upload" => &["s3:AbortMultipartUpload"],
        "list_multipart_uploads" => &["s3:ListBucketMultipartUploads"],
        // Reads the source (and its tags, when they are copied), writes the target.
        "copy_object" => &[
            "s3:GetObject",
            "s3:GetObjectTagging",
            "s3:PutObject",
            "s3:PutObjectTagging",
        ],
        // The history purge deletes noncurrent versions by id (HISTORY=versioning).
        "delete_objects" => &["s3:DeleteObject", "s3:DeleteObjectVersion"],
        "head_object" => &["s3:GetObject"],
        // Restore (and presigned links to a past version) read versions by id.
        "get_object" => &["s3:GetObject", "s3:GetObjectVersion"],
        "head_bucket" | "list_objects_v2" => &["s3:ListBucket"],
        "get_bucket_versioning" => &["s3:GetBucketVersioning"],
        // rebuild-catalog and restore --from-bucket on a versioned bucket.
        "list_object_versions" => &["s3:ListBucketVersions"],
        other => panic!("S3 operation {other} is new: add its IAM actions here and to the policy"),
    }
}

/// The S3 operations called under `dir`.
fn operations(dir: &str) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for entry in walkdir::WalkDir::new(repo_path(dir)) {
        let entry = entry.unwrap();
        if entry.path().extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text: String = std::fs::read_to_string(entry.path())
            .unwrap()
            .split_whitespace()
            .collect();
        // `.put_object().bucket(` once whitespace is gone.
        for (i, _) in text.match_indices("().bucket(") {
            let start = text[..i].rfind('.').unwrap() + 1;
            ops.insert(text[start..i].to_string());
        }
    }
    ops
}

fn policy_actions(file: &str) -> BTreeSet<String> {
    let text = portail_tests::repo_file(file);
    let policy: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut actions = BTreeSet::new();
    for st in policy["Statement"].as_array().unwrap() {
        assert_eq!(st["Effect"], "Allow");
        let resource = st["Resource"].as_str().unwrap();
        assert!(resource.starts_with("arn:aws:s3:::BUCKET"), "{resource}");
        for a in st["Action"].as_array().unwrap() {
            let a = a.as_str().unwrap();
            // Object actions only on the prefix, bucket actions only on the bucket.
            let on_objects = !(a.starts_with("s3:ListBucket") || a == "s3:GetBucketVersioning");
            assert_eq!(
                resource == "arn:aws:s3:::BUCKET/PREFIX*",
                on_objects,
                "{a} on {resource}"
            );
            actions.insert(a.to_string());
        }
    }
    actions
}

fn needed(dir: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let ops = operations(dir);
    let actions = ops
        .iter()
        .flat_map(|op| actions_of(op).iter().map(|a| a.to_string()))
        .collect();
    (ops, actions)
}

#[test]
fn the_agent_policy_grants_exactly_what_the_agent_calls() {
    let (ops, needed) = needed("agent/src");
    assert!(
        ops.contains("put_object") && ops.contains("list_multipart_uploads"),
        "{ops:?}"
    );
    assert_eq!(
        policy_actions("deploy/iam/agent-policy.json"),
        needed,
        "ops: {ops:?}"
    );
}

#[test]
fn the_url_service_policy_grants_exactly_what_it_calls() {
    let (ops, needed) = needed("url-service/src");
    assert_eq!(
        ops,
        ["get_object", "head_bucket"].map(String::from).into(),
        "presigned GETs and proxied downloads, and /readyz"
    );
    assert_eq!(policy_actions("deploy/iam/url-service-policy.json"), needed);
}

#[test]
fn the_bucket_configuration_turns_versioning_on_expires_history_and_cleans_up_uploads() {
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&portail_tests::repo_file(f)).unwrap()
    };
    assert_eq!(read("deploy/bucket/versioning.json")["Status"], "Enabled");
    let rules = read("deploy/bucket/lifecycle.json");
    let rules = rules["Rules"].as_array().unwrap();
    let rule = |key: &str| {
        rules
            .iter()
            .find(|r| !r[key].is_null())
            .unwrap_or_else(|| panic!("no {key} rule"))
    };
    assert_eq!(
        rule("AbortIncompleteMultipartUpload")["AbortIncompleteMultipartUpload"]
            ["DaysAfterInitiation"],
        1
    );
    assert!(
        rule("NoncurrentVersionExpiration")["NoncurrentVersionExpiration"]["NoncurrentDays"]
            .as_u64()
            .unwrap()
            > 0
    );
    // HISTORY=prefix copies: a backstop for the agent's own purge (when no agent runs), so it
    // must not delete a copy the default HISTORY_RETENTION still promises.
    let expiry = rule("Expiration");
    let prefix = expiry["Filter"]["Prefix"].as_str().unwrap();
    let default = portail_agent::AgentSettings::for_root("/r");
    assert_eq!(prefix, format!("PREFIX{}", default.history_dir()));
    let days = expiry["Expiration"]["Days"].as_u64().unwrap();
    assert!(
        days * 86_400 > default.history_retention.0.as_secs(),
        "{days} days"
    );
}
