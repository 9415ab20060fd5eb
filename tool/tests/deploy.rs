//! `deploy/` (at the workspace root): the Prometheus alerting rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), and name only
//! metrics the exporter serves; the systemd units and the Kubernetes DaemonSets run the
//! tool with arguments it accepts, and give CAP_NET_ADMIN to the reaping guard alone.

mod support;

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::{require, tool, Need};
use tcp_hygiene_cli::CensusQuery;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn read(path: &str) -> String {
    fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    require!(Need::Tool("promtool"));
    promtool(&["check", "rules", "tcp-hygiene.rules.yml"]);
    promtool(&["test", "rules", "tcp-hygiene.rules.test.yml"]);
}

/// Every `tcp_hygiene_*` name in the rules is a metric family the exporter serves.
#[test]
fn the_rules_name_the_exporters_metrics() {
    // A real census (of a port nothing uses): with the namespace's counters.
    let census = CensusQuery::new().port(9).owners(false).run().unwrap();
    let served = census.to_prometheus(Duration::ZERO);
    let rules = read("prometheus/tcp-hygiene.rules.yml");
    let mut named = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("tcp_hygiene_") && word.len() > "tcp_hygiene_".len() {
            named += 1;
            assert!(
                served.contains(&format!("# TYPE {word} ")),
                "the rules use {word}, which the exporter does not serve:\n{served}"
            );
        }
    }
    assert!(named >= 6, "{named}");
}

/// The arguments of `ExecStart=` in a unit, `%i` and `${VAR}` replaced.
fn exec_start(unit: &str, instance: &str) -> Vec<String> {
    let text = read(unit);
    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (format!("${{{k}}}"), v.to_owned()))
        .collect();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
    line.split_whitespace()
        .skip(1)
        .map(|word| {
            let mut word = word.replace("%i", instance);
            for (k, v) in &env {
                word = word.replace(k, v);
            }
            word
        })
        .collect()
}

#[test]
fn the_systemd_units_run_the_tool_with_arguments_it_accepts() {
    let exporter = exec_start("systemd/tcp-hygiene-exporter.service", "");
    assert_eq!(exporter[..2], ["exporter", "--listen"]);
    exporter[2]
        .parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("--listen {}: {e}", exporter[2]));
    let unit = read("systemd/tcp-hygiene-exporter.service");
    assert!(
        unit.contains("CapabilityBoundingSet=\n"),
        "no capability at all"
    );

    // The guard's command line, for one round and destroying nothing, on a port no test
    // uses: the tool accepts it.
    let mut guard = exec_start("systemd/tcp-hygiene-guard@.service", "9");
    assert_eq!(guard[0], "reap");
    assert!(guard.iter().any(|a| a == "--every"), "{guard:?}");
    guard.extend(["--count", "1", "--dry-run"].map(String::from));
    let args: Vec<&str> = guard.iter().map(String::as_str).collect();
    let out = tool::stdout(&args);
    assert!(out.starts_with("+0.0 s round 1: reaped 0 of 0"), "{out}");
    let unit = read("systemd/tcp-hygiene-guard@.service");
    assert!(
        unit.contains("CapabilityBoundingSet=CAP_NET_ADMIN\n"),
        "{unit}"
    );
}

/// The DaemonSets: both on the host's network; read-only root filesystems; the exporter
/// with no capability, non-root; NET_ADMIN only in the guard, which runs only on nodes
/// labelled for reaping.
#[test]
fn the_daemonsets_give_net_admin_to_the_guard_alone() {
    let text = read("kubernetes/daemonset.yaml");
    let docs: Vec<&str> = text.split("\n---\n").collect();
    let daemonset = |name: &str| {
        *docs
            .iter()
            .find(|d| d.contains("kind: DaemonSet") && d.contains(&format!("  name: {name}\n")))
            .unwrap_or_else(|| panic!("no DaemonSet {name}"))
    };
    let exporter = daemonset("tcp-hygiene-exporter");
    let guard = daemonset("tcp-hygiene-guard");
    for (name, doc) in [("exporter", exporter), ("guard", guard)] {
        assert!(doc.contains("      hostNetwork: true\n"), "{name}");
        assert!(doc.contains("readOnlyRootFilesystem: true\n"), "{name}");
        assert!(doc.contains("allowPrivilegeEscalation: false\n"), "{name}");
        assert!(doc.contains("drop: [\"ALL\"]\n"), "{name}");
    }
    assert!(!exporter.contains("NET_ADMIN") && !exporter.contains("add:"));
    assert!(exporter.contains("runAsNonRoot: true\n"));
    assert!(exporter.contains("args: [\"exporter\", \"--listen\", \"0.0.0.0:9978\"]"));
    assert!(guard.contains("add: [\"NET_ADMIN\"]\n"));
    assert!(guard.contains("nodeSelector:\n        tcp-hygiene.io/reap: \"on\"\n"));
    for doc in docs.iter().filter(|d| **d != guard) {
        let granted = doc
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains("NET_ADMIN"));
        assert!(!granted, "NET_ADMIN outside the guard:\n{doc}");
    }
    // The guard's arguments, for one dry round: the tool accepts them.
    let args_line = guard
        .lines()
        .find_map(|l| l.trim().strip_prefix("args: "))
        .unwrap();
    let mut args: Vec<String> = args_line
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|a| a.trim_matches('"').to_owned())
        .collect();
    assert_eq!(args[0], "reap");
    // Port 9: discard, which nothing on a test machine serves.
    let port = args.iter().position(|a| a == "--port").unwrap() + 1;
    args[port] = "9".to_owned();
    args.extend(["--count", "1", "--dry-run"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tool::stdout(&args);
    assert!(out.starts_with("+0.0 s round 1: reaped 0 of 0"), "{out}");
}
