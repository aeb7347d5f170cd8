//! `hybridboot config check`: parse and validate only, one clear line per problem.
use crate::util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::config::NodeConfig;
use util::{run, Run};

/// A valid NodeConfig; its first line is `---`.
fn valid() -> String {
    format!(
        "---\n{}",
        NodeConfig::example("node-1", "handle:0x81000001").yaml()
    )
}

fn fixture_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        std::env::var_os("HYBRIDBOOT_NODEADM_FIXTURES").map(PathBuf::from),
        Some(manifest.join("../shared/fixtures/nodeadm")),
        Some(manifest.join("../../shared/fixtures/nodeadm")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("cases").is_dir())
    .expect("nodeadm fixtures not found: set HYBRIDBOOT_NODEADM_FIXTURES")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn check(source: &str) -> Run {
    run(&["config", "check", "--config-source", source], &[])
}

/// A failure is exit 3 (operator) and exactly one line on stderr containing every `needle`.
fn one_clear_error(r: &Run, needles: &[&str]) {
    assert_eq!(r.code, 3, "stdout:{}\nstderr:{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {}", lines[0]);
    }
    assert!(r.stdout.is_empty());
}

#[test]
fn valid_config_in_every_source_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "node.yaml", &valid());
    for source in [path.clone(), format!("file://{path}")] {
        let r = check(&source);
        r.ok();
        assert!(
            r.stderr
                .contains("valid NodeConfig for node node-1 in cluster my-cluster"),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains("warn"), "{}", r.stderr);
    }
    // nodeadm's relative form: file://node.yaml is host+path, relative to the working directory.
    let out = Command::new(util::bin())
        .args(["config", "check", "--config-source", "file://node.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    Run::from(out).ok();
}

#[test]
fn nodeadm_fixture_passes_with_arn_warnings() {
    let cfg = fixture_dir().join("cases/upgrade-with-iam/config.yaml");
    let r = check(&format!("file://{}", cfg.display()));
    r.ok();
    // The fixture's profile ARN is an instance profile and its trust anchor a PCA: accepted,
    // but pointed out.
    assert!(
        r.stderr.contains("spec.hybrid.iamRolesAnywhere.profileArn"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("spec.hybrid.iamRolesAnywhere.trustAnchorArn"),
        "{}",
        r.stderr
    );
}

#[test]
fn multi_document_with_bootstrap_config() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}---\napiVersion: hybridboot/v1alpha1\nkind: BootstrapConfig\nanything: goes\n",
        valid()
    );
    let r = check(&write(dir.path(), "node.yaml", &text));
    r.ok();
    assert!(
        r.stderr.contains("with a BootstrapConfig document"),
        "{}",
        r.stderr
    );
}

#[test]
fn malformed_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.yaml",
        &valid().replace("    name: my-cluster\n", "    name: [my-cluster\n"),
    );
    one_clear_error(&check(&path), &[&format!("{path}:")]);
}

#[test]
fn unknown_field_names_position_and_allowed_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "typo.yaml",
        &valid().replace(
            "      nodeName: node-1\n",
            "      nodeName: node-1\n      nodename: node-2\n",
        ),
    );
    one_clear_error(
        &check(&path),
        &[
            &format!("{path}:11:7:"),
            "spec.hybrid.iamRolesAnywhere",
            "unknown field `nodename`",
            "expected one of `nodeName`",
        ],
    );
}

#[test]
fn missing_region() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "r.yaml",
        &valid().replace("    region: us-west-2\n", ""),
    );
    one_clear_error(&check(&path), &[&path, "spec.cluster.region: missing"]);
}

#[test]
fn node_name_of_65_characters() {
    let dir = tempfile::tempdir().unwrap();
    let long = "n".repeat(65);
    let path = write(
        dir.path(),
        "n.yaml",
        &valid().replace("nodeName: node-1", &format!("nodeName: {long}")),
    );
    one_clear_error(
        &check(&path),
        &["spec.hybrid.iamRolesAnywhere.nodeName: 65 characters; at most 64"],
    );
    let ok = write(
        dir.path(),
        "ok.yaml",
        &valid().replace("nodeName: node-1", &format!("nodeName: {}", "n".repeat(64))),
    );
    check(&ok).ok();
}

#[test]
fn missing_file_directory_and_bad_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    one_clear_error(
        &check(&format!("file://{}", missing.display())),
        &["cannot read configuration", "nope.yaml"],
    );
    one_clear_error(&check(dir.path().to_str().unwrap()), &["is a directory"]);
    one_clear_error(&check("imds://user-data"), &["hybrid nodes have none"]);
}

#[test]
fn unsubstituted_placeholders_are_refused_each_with_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = NodeConfig {
        node_name: "$NODE_NAME".into(),
        role_arn: "${ROLE_ARN}".into(),
        ..NodeConfig::example("x", "handle:0x81000001")
    }
    .yaml();
    let line = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let r = check(&write(dir.path(), "node.yaml", &text));
    one_clear_error(
        &r,
        &[
            &format!(
                "line {} (spec.hybrid.iamRolesAnywhere.nodeName): unsubstituted placeholder $NODE_NAME",
                line("nodeName")
            ),
            &format!(
                "line {} (spec.hybrid.iamRolesAnywhere.roleArn): unsubstituted placeholder ${{ROLE_ARN}}",
                line("roleArn")
            ),
        ],
    );
    assert!(!r.stderr.contains("valid"), "{}", r.stderr);
}

#[test]
fn tab_indentation_names_the_lines_and_says_yaml_needs_spaces() {
    let dir = tempfile::tempdir().unwrap();
    let text = valid()
        .replace("    name: my-cluster", "\tname: my-cluster")
        .replace("    region: us-west-2", "\tregion: us-west-2");
    let tabbed: Vec<String> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with('\t'))
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    assert_eq!(tabbed.len(), 2);
    let r = check(&write(dir.path(), "node.yaml", &text));
    one_clear_error(
        &r,
        &[&format!(
            "lines {} start with a TAB; YAML needs spaces",
            tabbed.join(", ")
        )],
    );
}
