//! `aws-auth render` (fresh and `--merge`) read back by the real kubectl and PyYAML, and
//! `access-entry render` validated against botocore's EKS service model.
use crate::util;

use std::path::Path;

use util::{dir_entries, run, tool, Run};

const NODE: &str = "arn:aws:iam::111122223333:role/HybridNodes";
const ADMIN: &str = "arn:aws:iam::111122223333:role/KubernetesAdmin";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// kubectl with no cluster: `label --local` decodes the file with Kubernetes' own YAML decoder
/// and prints the object without contacting any server.
fn kubectl_read(file: &Path) -> serde_json::Value {
    let r = tool(
        "kubectl",
        &[
            "label",
            "--local",
            "-f",
            s(file),
            "-o",
            "json",
            "hybridboot-test-",
        ],
        &[("KUBECONFIG", "/dev/null")],
    );
    assert_eq!(
        r.code,
        0,
        "kubectl rejected {}: {}",
        file.display(),
        r.stderr
    );
    serde_json::from_str(&r.stdout).unwrap()
}

/// Parses every data value of a ConfigMap (as kubectl printed it) with PyYAML, checking that
/// each is a string as ConfigMap data must be.
const PARSE_DATA: &str = r#"
import json, sys, yaml
cm = json.load(sys.stdin)
out = {}
for k, v in (cm.get("data") or {}).items():
    assert isinstance(v, str), f"data.{k} is not a string"
    out[k] = yaml.safe_load(v)
print(json.dumps(out))
"#;

fn data_parsed(cm: &serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let mut child = std::process::Command::new(util::python())
        .args(["-c", PARSE_DATA])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("venv python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cm.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn node_entry(arn: &str) -> serde_json::Value {
    serde_json::json!({"rolearn": arn, "username": "system:node:{{SessionName}}",
        "groups": ["system:bootstrappers", "system:nodes"]})
}

fn render(extra: &[&str]) -> Run {
    let mut args = vec!["aws-auth", "render"];
    args.extend_from_slice(extra);
    run(&args, &[])
}

#[test]
fn rendered_configmap_is_what_kubectl_reads_and_creates() {
    let dir = tempfile::tempdir().unwrap();
    let r = render(&[
        "--node-role-arn",
        NODE,
        "--admin-role-arn",
        ADMIN,
        "--group",
        "system:masters",
        "--admin-role-arn",
        "arn:aws:iam::111122223333:role/Viewer",
        "--group",
        "viewers",
        "--group",
        "auditors",
        "--username",
        "viewer:{{SessionName}}",
    ]);
    r.ok();
    let file = dir.path().join("aws-auth.yaml");
    std::fs::write(&file, &r.stdout).unwrap();
    let cm = kubectl_read(&file);
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "aws-auth");
    assert_eq!(cm["metadata"]["namespace"], "kube-system");
    let data = data_parsed(&cm);
    assert_eq!(
        data,
        serde_json::json!({"mapRoles": [
            node_entry(NODE),
            {"rolearn": ADMIN, "username": "KubernetesAdmin:{{SessionName}}", "groups": ["system:masters"]},
            {"rolearn": "arn:aws:iam::111122223333:role/Viewer", "username": "viewer:{{SessionName}}",
             "groups": ["viewers", "auditors"]},
        ]})
    );

    // The same mapRoles text through `kubectl create configmap --from-file`: a ConfigMap made
    // that way already holds every mapping, so merging changes nothing at all.
    let roles = dir.path().join("mapRoles");
    std::fs::write(&roles, cm["data"]["mapRoles"].as_str().unwrap()).unwrap();
    let created = tool(
        "kubectl",
        &[
            "create",
            "configmap",
            "aws-auth",
            "-n",
            "kube-system",
            &format!("--from-file=mapRoles={}", s(&roles)),
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        &[("KUBECONFIG", "/dev/null")],
    );
    created.ok();
    let created_file = dir.path().join("created.yaml");
    std::fs::write(&created_file, &created.stdout).unwrap();
    let again = render(&[
        "--node-role-arn",
        NODE,
        "--admin-role-arn",
        ADMIN,
        "--group",
        "system:masters",
        "--merge",
        s(&created_file),
    ]);
    again.ok();
    assert_eq!(again.stdout, created.stdout);
    assert!(again.stderr.contains("unchanged"), "{}", again.stderr);
}

/// An aws-auth ConfigMap as `kubectl get cm aws-auth -n kube-system -o yaml` prints it for an
/// eksctl cluster with a user and a second role.
const EXISTING: &str = r#"apiVersion: v1
data:
  mapAccounts: |
    - "444455556666"
  mapRoles: |
    - groups:
      - system:bootstrappers
      - system:nodes
      rolearn: arn:aws:iam::111122223333:role/eksctl-c1-nodegroup-NodeInstanceRole-1ABC
      username: system:node:{{EC2PrivateDNSName}}
    - rolearn: arn:aws:iam::111122223333:role/Viewer
      username: viewer
      groups:
        - view-only
  mapUsers: |
    - userarn: arn:aws:iam::111122223333:user/alice
      username: alice
      groups:
      - system:masters
kind: ConfigMap
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"v1","kind":"ConfigMap","metadata":{"annotations":{},"name":"aws-auth","namespace":"kube-system"}}
  creationTimestamp: "2024-05-31T10:00:00Z"
  labels:
    app.kubernetes.io/managed-by: eksctl
  name: aws-auth
  namespace: kube-system
  resourceVersion: "123456"
  uid: 0b7c3f2e-5f4c-4a55-9a57-1f2d3c4b5a69
"#;

#[test]
fn merge_keeps_everything_else_and_twice_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("aws-auth.yaml");
    std::fs::write(&existing, EXISTING).unwrap();
    let before = kubectl_read(&existing);
    let before_data = data_parsed(&before);

    let merged = dir.path().join("merged.yaml");
    let args = |merge: &Path, out: &Path| -> Vec<String> {
        [
            "--node-role-arn",
            NODE,
            "--admin-role-arn",
            ADMIN,
            "--group",
            "system:masters",
            "--merge",
            s(merge),
            "--out",
            s(out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let a = args(&existing, &merged);
    let r = render(&a.iter().map(String::as_str).collect::<Vec<_>>());
    r.ok();
    assert!(r.stdout.is_empty());
    let after = kubectl_read(&merged);
    let after_data = data_parsed(&after);

    // Metadata and the other keys are untouched, mapUsers/mapAccounts byte for byte.
    assert_eq!(after["metadata"], before["metadata"]);
    assert_eq!(after["metadata"]["resourceVersion"], "123456");
    assert_eq!(after["data"]["mapUsers"], before["data"]["mapUsers"]);
    assert_eq!(after["data"]["mapAccounts"], before["data"]["mapAccounts"]);
    let mut roles = before_data["mapRoles"].as_array().unwrap().clone();
    roles.push(node_entry(NODE));
    roles.push(serde_json::json!({"rolearn": ADMIN,
        "username": "KubernetesAdmin:{{SessionName}}", "groups": ["system:masters"]}));
    assert_eq!(after_data["mapRoles"], serde_json::Value::Array(roles));
    assert_eq!(after_data["mapUsers"], before_data["mapUsers"]);

    // Twice: byte-identical, whether to stdout, to another file or in place.
    let first = std::fs::read(&merged).unwrap();
    let r = render(&[
        "--node-role-arn",
        NODE,
        "--admin-role-arn",
        ADMIN,
        "--group",
        "system:masters",
        "--merge",
        s(&merged),
    ]);
    r.ok();
    assert_eq!(r.stdout.as_bytes(), &first[..]);
    let a = args(&merged, &merged);
    render(&a.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    assert_eq!(std::fs::read(&merged).unwrap(), first);
    assert_eq!(
        dir_entries(dir.path()),
        vec!["aws-auth.yaml".to_string(), "merged.yaml".to_string()]
    );

    // kubectl's own re-serialisation of the merged object (keys sorted, its quoting) is
    // recognised too: nothing to add, output equals input.
    let relisted = tool(
        "kubectl",
        &[
            "label",
            "--local",
            "-f",
            s(&merged),
            "-o",
            "yaml",
            "hybridboot-test-",
        ],
        &[("KUBECONFIG", "/dev/null")],
    );
    relisted.ok();
    let relisted_file = dir.path().join("relisted.yaml");
    std::fs::write(&relisted_file, &relisted.stdout).unwrap();
    let r = render(&[
        "--node-role-arn",
        NODE,
        "--admin-role-arn",
        ADMIN,
        "--group",
        "system:masters",
        "--merge",
        s(&relisted_file),
    ]);
    r.ok();
    assert_eq!(r.stdout, relisted.stdout);
}

#[test]
fn conflicting_mapping_needs_replace_and_is_never_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("aws-auth.yaml");
    std::fs::write(
        &existing,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: aws-auth\n  namespace: kube-system\ndata:\n  mapRoles: |\n    - rolearn: {NODE}\n      username: someone\n      groups: [system:masters]\n      extra: kept\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out.yaml");
    let r = render(&[
        "--node-role-arn",
        NODE,
        "--merge",
        s(&existing),
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("--replace") && r.stderr.contains(s(&existing)),
        "{}",
        r.stderr
    );
    assert!(!out.exists());

    render(&[
        "--node-role-arn",
        NODE,
        "--merge",
        s(&existing),
        "--replace",
        "--out",
        s(&out),
    ])
    .ok();
    let data = data_parsed(&kubectl_read(&out));
    let mut want = node_entry(NODE);
    want["extra"] = "kept".into();
    assert_eq!(data["mapRoles"], serde_json::json!([want]));
}

#[test]
fn role_paths_are_stripped_for_aws_auth_and_kept_for_access_entries() {
    let with_path = "arn:aws:iam::111122223333:role/edge/fleet/HybridNodes";
    let r = render(&["--node-role-arn", with_path]);
    r.ok();
    assert!(
        r.stderr.contains("without their path") && r.stderr.contains(NODE),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains(&format!("rolearn: {NODE}\n")),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("edge/"), "{}", r.stdout);

    let r = run(
        &[
            "access-entry",
            "render",
            "--node-role-arn",
            with_path,
            "--cluster-name",
            "c1",
        ],
        &[],
    );
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["principalArn"], with_path);
}

#[test]
fn bad_inputs_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.yaml");
    std::fs::write(
        &secret,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: aws-auth\n  namespace: kube-system\n",
    )
    .unwrap();
    let garbage = dir.path().join("garbage.yaml");
    std::fs::write(&garbage, "data: [unclosed\n").unwrap();
    let missing = dir.path().join("missing.yaml");
    let out = dir.path().join("out.yaml");
    for (args, code, needle) in [
        (
            vec!["--node-role-arn", NODE, "--merge", s(&secret)],
            3,
            "Secret",
        ),
        (
            vec!["--node-role-arn", NODE, "--merge", s(&garbage)],
            3,
            "garbage.yaml",
        ),
        (
            vec!["--node-role-arn", NODE, "--merge", s(&missing)],
            3,
            "missing.yaml",
        ),
        (
            vec![
                "--node-role-arn",
                "arn:aws:sts::111122223333:assumed-role/HybridNodes/node-1",
            ],
            3,
            "assumed-role",
        ),
        (
            vec!["--node-role-arn", NODE, "--admin-role-arn", ADMIN],
            3,
            "no --group",
        ),
        (
            vec!["--node-role-arn", NODE, "--group", "system:masters"],
            2,
            "must follow",
        ),
    ] {
        let mut a = args.clone();
        a.extend_from_slice(&["--out", s(&out)]);
        let r = render(&a);
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        if code == 3 {
            assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        }
        assert!(!out.exists());
    }
}

/// Validates the request against botocore's EKS model, the one `aws eks create-access-entry
/// --cli-input-json` uses (unknown keys are errors there), and `type` against the valid values
/// the model documents (the shape itself is a plain string).
const VALIDATE_ACCESS_ENTRY: &str = r#"
import json, re, sys
import botocore.session
from botocore.validate import ParamValidator
op = botocore.session.get_session().get_service_model("eks").operation_model("CreateAccessEntry")
params = json.load(open(sys.argv[1]))
report = ParamValidator().validate(params, op.input_shape)
assert not report.has_errors(), report.generate_report()
doc = op.input_shape.members["type"].documentation
valid = re.findall(r"<code>([A-Z0-9_]+)</code>", doc.split("</p>")[0])
assert "STANDARD" in valid and params["type"] in valid, valid
print("valid", sorted(params))
"#;

#[test]
fn access_entry_is_a_valid_create_access_entry_request() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("entry.json");
    run(
        &[
            "access-entry",
            "render",
            "--node-role-arn",
            NODE,
            "--cluster-name",
            "hybrid-prod_1",
            "--out",
            s(&out),
        ],
        &[],
    )
    .ok();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"clusterName": "hybrid-prod_1", "principalArn": NODE, "type": "HYBRID_LINUX"})
    );
    let r = tool(
        util::python().to_str().unwrap(),
        &["-c", VALIDATE_ACCESS_ENTRY, s(&out)],
        &[],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("valid"), "{}", r.stdout);

    for (arn, name, needle) in [
        (NODE, "_starts-with-underscore", "--cluster-name"),
        ("arn:aws:iam::111122223333:user/bob", "c1", "IAM user"),
    ] {
        let r = run(
            &[
                "access-entry",
                "render",
                "--node-role-arn",
                arn,
                "--cluster-name",
                name,
            ],
            &[],
        );
        assert_eq!(r.code, 3, "{}", r.stderr);
        assert!(r.stderr.contains(needle), "{}", r.stderr);
    }
}
