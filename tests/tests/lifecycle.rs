//! The flow lifecycle through the real `ferry` binary: deploys (all or nothing), diff, revert
//! with snapshots, clone drafts and merge, `ferry show`, promotion along a project topology
//! with a host rewrite and an approval (four eyes), the report of every edge, label
//! conditions, protected environments, named tokens, cursor commands, snapshot restores with
//! cursors, backfill, and the audit log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_e2e::{run_ferry, text};
use ferry_sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);

/// A project directory with a state directory, run as a separate `ferry` process per command.
struct Project {
    dir: tempfile::TempDir,
    envs: Vec<(String, String)>,
}

impl Project {
    fn new() -> Self {
        Project {
            dir: tempfile::tempdir().unwrap(),
            envs: vec![("FERRY_USER".into(), "alice".into())],
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    fn env(&mut self, k: &str, v: &str) {
        self.envs.push((k.into(), v.into()));
    }

    /// Runs ferry in the project directory (blocking; call from `spawn_blocking` when a
    /// sandbox runs on this runtime).
    fn ferry(&self, args: &[&str]) -> std::process::Output {
        self.ferry_as("alice", args)
    }

    /// [`Project::ferry`] as another user (`FERRY_USER`).
    fn ferry_as(&self, user: &str, args: &[&str]) -> std::process::Output {
        let mut envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .filter(|(k, _)| k != "FERRY_USER")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        envs.push(("FERRY_USER", user));
        run_ferry(args, &envs, self.path(), LIMIT)
    }

    /// `--output json` as another user.
    fn json_as(&self, user: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let out = self.ferry_as(user, &a);
        assert_eq!(out.status.code(), Some(0), "ferry {args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("ferry {args:?}: not JSON ({e}): {}", text(&out)))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ferry(args);
        assert_eq!(out.status.code(), Some(0), "ferry {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let s = self.ok(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("ferry {args:?}: not JSON ({e}): {s}"))
    }

    /// `ferry diff ... --output json`: exit 1 when the sides differ (as `diff`), 0 when not.
    fn diff(&self, args: &[&str]) -> Value {
        let mut a = vec!["diff"];
        a.extend(args);
        a.extend(["--output", "json"]);
        let out = self.ferry(&a);
        let d: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("ferry {a:?}: not JSON ({e}): {}", text(&out)));
        let differ = !d["changes"].as_array().expect("changes").is_empty();
        assert_eq!(
            out.status.code(),
            Some(i32::from(differ)),
            "ferry {a:?}: {}",
            text(&out)
        );
        d
    }

    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.ferry(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "ferry {args:?}: {}",
            text(&out)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// A small flow; `sink` is the destination base URL (literal, so host rewrites apply to it).
fn flow(name: &str, sink: &str, extra_field: &str, labels: &str) -> String {
    format!(
        r#"name: {name}
description: lifecycle test flow
labels: {{ {labels} }}
source:
  http:
    url: "{{{{ env.SHOP_URL }}}}/api/orders"
    auth:
      bearer: {{ secret: SHOP_TOKEN }}
    params:
      since: "{{{{ cursor }}}}"
      page_size: 50
    records: "$.orders[*]"
    paginate:
      next_url: "$.links.next"
    cursor:
      field: "$.changed_at"
      start: "2024-01-01T00:00:00Z"
map:
  key: "$.id"
  fields:
    order_ref: "$.number"
    email: {{ from: "$.buyer.email", transform: [trim, lower] }}
{extra_field}
destination:
  http:
    method: PUT
    url: "{sink}/api/sink/v2/orders/{{{{ record.order_ref }}}}"
    idempotency_key: "order-{{{{ source.id }}}}-{{{{ source.changed_at }}}}"
    concurrency: 8
"#
    )
}

const TOKEN: &str = "lifecycle-token-0123456789";

async fn sandbox(records: u64) -> Sandbox {
    Sandbox::start(SandboxConfig {
        records,
        source_token: Some(TOKEN.into()),
        ..SandboxConfig::default()
    })
    .await
    .unwrap()
}

/// Runs blocking ferry commands off the runtime the sandboxes serve on.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn revisions(p: &Project, flow: &str) -> Vec<Value> {
    p.json(&["history", flow])["revisions"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn deploy_is_all_or_nothing_and_unchanged_flows_get_no_revision() {
    let p = Project::new();
    p.write(
        "flows/a.yaml",
        &flow("flow-a", "http://127.0.0.1:9", "", ""),
    );
    p.write(
        "flows/b.yaml",
        &flow("flow-b", "http://127.0.0.1:9", "", ""),
    );
    let out = p.json(&["deploy", "flows", "-m", "first"]);
    assert_eq!(out.as_array().unwrap().len(), 2);
    assert!(out.as_array().unwrap().iter().all(|o| o["created"] == true));

    // the same files again, reformatted and with a comment: no new revision
    let a = flow("flow-a", "http://127.0.0.1:9", "", "");
    p.write(
        "flows/a.yaml",
        &format!("# a comment\n{}", a.replace(": ", ":   ")),
    );
    let out = p.json(&["deploy", "flows"]);
    assert!(
        out.as_array()
            .unwrap()
            .iter()
            .all(|o| o["created"] == false),
        "{out}"
    );
    assert_eq!(revisions(&p, "flow-a").len(), 1);

    // one valid change plus one invalid file: nothing deployed
    p.write(
        "flows/a.yaml",
        &flow("flow-a", "http://127.0.0.1:9", "    note: { const: x }", ""),
    );
    p.write("flows/c.yaml", "name: flow-c\nsource: {}\n");
    let msg = p.fails(&["deploy", "flows"], 2);
    assert!(msg.contains("nothing deployed"), "{msg}");
    assert_eq!(revisions(&p, "flow-a").len(), 1);
    std::fs::remove_file(p.path().join("flows/c.yaml")).unwrap();

    // --dry-run shows the change by field path and writes nothing
    let plan = p.ok(&["deploy", "flows", "--dry-run"]);
    assert!(plan.contains("map.fields.note"), "{plan}");
    assert_eq!(revisions(&p, "flow-a").len(), 1);
    let out = p.json(&["deploy", "flows", "-m", "add note"]);
    let created: Vec<_> = out
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["created"] == true)
        .collect();
    assert_eq!(created.len(), 1, "{out}");
    let revs = revisions(&p, "flow-a");
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[1]["author"], "alice");
    assert_eq!(revs[1]["message"], "add note");

    // diff of the two revisions, and of a revision against a reformatted file: by field path
    let d = p.diff(&["flow-a", "1", "2"]);
    let paths: Vec<&str> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["map.fields.note"], "{d}");
    let file = p.path().join("flows/a.yaml").display().to_string();
    let d = p.diff(&["flow-a", "2", &file]);
    assert!(d["changes"].as_array().unwrap().is_empty(), "{d}");
    // exit codes as `diff`: 1 when the sides differ, 0 when not, 2 on bad input
    assert_eq!(
        p.ferry(&["diff", "flow-a", "1", "2"]).status.code(),
        Some(1)
    );
    assert_eq!(
        p.ferry(&["diff", "flow-a", "2", &file]).status.code(),
        Some(0)
    );
    let msg = p.fails(&["diff", "flow-a", "no-such-file.yaml"], 2);
    assert!(
        msg.contains("neither a revision number nor a flow file"),
        "{msg}"
    );
    p.fails(&["diff", "flow-a", "9"], 2);

    // the audit log has both deploys
    let audit = p.json(&["audit", "--flow", "flow-a"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["deploy", "deploy"], "{audit}");
    assert!(audit[0]["actor"] == "alice");
}

#[test]
fn revert_makes_a_new_revision_with_old_content_after_a_snapshot() {
    let p = Project::new();
    let v1 = flow("orders", "http://127.0.0.1:9", "", "");
    let v2 = flow("orders", "http://127.0.0.1:9", "    note: { const: x }", "");
    p.write("orders.yaml", &v1);
    p.ok(&["deploy", "orders.yaml", "-m", "one"]);
    p.write("orders.yaml", &v2);
    p.ok(&["deploy", "orders.yaml", "-m", "two"]);
    let r = p.json(&["revert", "orders", "--to", "1"]);
    assert_eq!(r["outcome"]["revision"]["number"], 3);
    let revs = revisions(&p, "orders");
    assert_eq!(revs.len(), 3);
    assert_eq!(revs[2]["hash"], revs[0]["hash"], "content of revision 1");
    assert_eq!(revs[2]["active_in"], serde_json::json!(["default"]));
    // the snapshot taken first holds revision 2
    let snaps = p.json(&["snapshot", "list"]);
    let snap = &snaps[0];
    assert_eq!(snap["name"], r["snapshot"]);
    assert_eq!(snap["flows"][0]["revision"], 2);
    // reverting to what is active is refused
    let msg = p.fails(&["revert", "orders", "--to", "1"], 2);
    assert!(msg.contains("nothing to revert"), "{msg}");
    // restore that snapshot: revision 2's content comes back as revision 4
    let name = snap["name"].as_str().unwrap().to_string();
    let r = p.json(&["snapshot", "restore", &name]);
    assert_eq!(r["outcomes"][0]["revision"]["number"], 4);
    let revs = revisions(&p, "orders");
    assert_eq!(revs[3]["hash"], revs[1]["hash"]);
    // a named snapshot, and a duplicate name refused
    p.ok(&["snapshot", "create", "before-friday", "-m", "release"]);
    let msg = p.fails(&["snapshot", "create", "before-friday"], 2);
    assert!(msg.contains("before-friday"), "{msg}");
    let audit = p.json(&["audit", "--flow", "orders"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"revert"), "{actions:?}");
    assert!(actions.contains(&"restore"), "{actions:?}");
}

#[test]
fn clone_edit_and_merge_with_and_without_conflicts() {
    let p = Project::new();
    let base = flow("orders", "http://127.0.0.1:9", "", "");
    p.write("orders.yaml", &base);
    p.ok(&["deploy", "orders.yaml"]);
    let c = p.json(&["clone", "orders", "orders-exp"]);
    assert_eq!(c["revision"]["origin"]["flow"], "orders");
    assert_eq!(c["revision"]["origin"]["revision"], 1);
    let msg = p.fails(&["clone", "orders", "orders-exp"], 2);
    assert!(msg.contains("exists already"), "{msg}");
    // a name that breaks the rule is refused with the rule, before anything is written
    let msg = p.fails(&["clone", "orders", "Bad Name"], 2);
    assert!(
        msg.contains("`Bad Name` is not a flow name: lower-case letters, digits, `-` and `_`"),
        "{msg}"
    );
    assert!(
        msg.contains("pick another name for the clone of `orders`"),
        "{msg}"
    );
    assert!(!msg.contains("after the merge"), "{msg}");

    // the clone adds a field; the original changes another one: a clean merge
    p.write(
        "exp.yaml",
        &flow(
            "orders-exp",
            "http://127.0.0.1:9",
            "    channel: { const: web }",
            "",
        ),
    );
    p.ok(&["deploy", "exp.yaml"]);
    p.write(
        "orders.yaml",
        &flow("orders", "http://127.0.0.1:9", "", "team: ops"),
    );
    p.ok(&["deploy", "orders.yaml"]);
    let m = p.json(&["merge", "orders-exp", "--into", "orders"]);
    assert_eq!(m["base"]["flow"], "orders");
    assert_eq!(m["base"]["revision"], 1);
    let merged = m["outcome"]["revision"]["number"].as_i64().unwrap();
    assert_eq!(merged, 3);
    let d = p.diff(&["orders", "2", "3"]);
    let paths: Vec<&str> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["map.fields.channel"], "{d}");
    let revs = revisions(&p, "orders");
    assert!(
        revs[2]["message"]
            .as_str()
            .unwrap()
            .contains("merge orders-exp"),
        "{revs:?}"
    );

    // both sides change the same field differently: refused, nothing written
    p.write(
        "exp.yaml",
        &flow(
            "orders-exp",
            "http://127.0.0.1:9",
            "    channel: { const: app }",
            "",
        ),
    );
    p.ok(&["deploy", "exp.yaml"]);
    p.write(
        "orders.yaml",
        &flow(
            "orders",
            "http://127.0.0.1:9",
            "    channel: { const: shop }",
            "team: ops",
        ),
    );
    p.ok(&["deploy", "orders.yaml"]);
    let msg = p.fails(&["merge", "orders-exp", "--into", "orders"], 2);
    assert!(msg.contains("map.fields.channel"), "{msg}");
    assert!(msg.contains("nothing was written"), "{msg}");
    let out = p.ferry(&[
        "merge",
        "orders-exp",
        "--into",
        "orders",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let conflicts: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        conflicts["conflicts"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with("map.fields.channel"),
        "{conflicts}"
    );
    assert_eq!(revisions(&p, "orders").len(), 4);
    // settled: theirs wins
    p.ok(&[
        "merge",
        "orders-exp",
        "--into",
        "orders",
        "--take",
        "theirs",
    ]);
    let revs = revisions(&p, "orders");
    assert_eq!(revs.len(), 5);
    let spec = p.diff(&["orders", "4", "5"]);
    let changes = spec["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{spec}");
    assert!(
        changes[0]["path"]
            .as_str()
            .unwrap()
            .starts_with("map.fields.channel"),
        "{spec}"
    );
    assert!(changes[0]["after"].to_string().contains("app"), "{spec}");
    let audit = p.json(&["audit", "--action", "merge"]);
    assert_eq!(audit.as_array().unwrap().len(), 2);
    let audit = p.json(&["audit", "--action", "clone"]);
    assert_eq!(audit.as_array().unwrap().len(), 1);
}

fn project_file(shop: &str, staging_sink: &str, prod_us_sink: &str) -> String {
    let host = |u: &str| u.trim_start_matches("http://").to_string();
    format!(
        r#"environments:
  dev:      {{ variables: {{ SHOP_URL: "{shop}" }}, secrets: [SHOP_TOKEN] }}
  staging:  {{ variables: {{ SHOP_URL: "{shop}" }}, secrets: [SHOP_TOKEN] }}
  prod-eu:  {{ variables: {{ SHOP_URL: "{shop}" }}, secrets: [SHOP_TOKEN] }}
  prod-us:  {{ variables: {{ SHOP_URL: "{shop}" }}, secrets: [SHOP_TOKEN] }}
  internal: {{ variables: {{ SHOP_URL: "{shop}" }}, secrets: [SHOP_TOKEN] }}
  bare:     {{ variables: {{}} }}
promotion:
  - from: dev
    to: staging
  - from: dev
    to: internal
    when: {{ labels: {{ internal: "true" }} }}
  - from: staging
    to: prod-eu
  - from: staging
    to: prod-us
    rules:
      rewrite_host: {{ "{staging}": "{prod}" }}
      approval: true
  - from: staging
    to: bare
"#,
        staging = host(staging_sink),
        prod = host(prod_us_sink),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_fans_out_rewrites_hosts_waits_for_approval_and_follows_labels() {
    let staging = sandbox(120).await; // source of every environment, sink of staging/prod-eu
    // the host prod-us is rewritten to: its SHOP_URL variable (same host as the staging sink)
    // is rewritten too, so prod-us reads this sandbox's 30 orders and delivers them here
    let prod_us = sandbox(30).await;
    let mut p = Project::new();
    p.env("SHOP_TOKEN", TOKEN);
    p.write(
        "ferry.yaml",
        &project_file(
            &staging.base_url(),
            &staging.base_url(),
            &prod_us.base_url(),
        ),
    );
    p.write("orders.yaml", &flow("orders", &staging.base_url(), "", ""));
    let result = blocking(move || {
        // an environment the project does not define is refused
        let msg = p.fails(&["deploy", "orders.yaml", "--env", "qa"], 2);
        assert!(msg.contains("`qa` is not defined"), "{msg}");
        p.ok(&["deploy", "orders.yaml", "--env", "dev"]);

        // dev → staging (the only unconditional edge from dev: internal needs a label)
        let out = p.json(&["promote", "orders", "--from", "dev"]);
        let taken: Vec<&Value> = out["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["taken"] == true)
            .collect();
        assert_eq!(taken.len(), 1, "{out}");
        let staged = &taken[0]["promotion"];
        assert_eq!(staged["to_env"], "staging");
        assert_eq!(staged["state"], "active");
        assert_eq!(staged["revision"], 1, "same content, same revision");
        // the conditional edge refuses by name
        let msg = p.fails(
            &["promote", "orders", "--from", "dev", "--to", "internal"],
            2,
        );
        assert!(msg.contains("label") && msg.contains("internal"), "{msg}");

        // staging → prod-eu (live) and prod-us (rewritten host, pending); `bare` lacks the
        // variable and secret, so a fan-out including it is refused as a whole first
        let msg = p.fails(&["promote", "orders", "--from", "staging"], 2);
        assert!(
            msg.contains("SHOP_URL") && msg.contains("SHOP_TOKEN"),
            "{msg}"
        );
        assert!(p.json(&["promotions"]).as_array().unwrap().len() == 1);
        let promoted = |out: &Value, to: &str| {
            out["edges"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["to"] == to && e["taken"] == true)
                .unwrap_or_else(|| panic!("no promotion to {to}: {out}"))["promotion"]
                .clone()
        };
        let eu = promoted(
            &p.json(&["promote", "orders", "--from", "staging", "--to", "prod-eu"]),
            "prod-eu",
        );
        assert_eq!(eu["state"], "active");
        assert_eq!(eu["revision"], 1);
        let us = promoted(
            &p.json(&["promote", "orders", "--from", "staging", "--to", "prod-us"]),
            "prod-us",
        );
        assert_eq!(us["state"], "pending");
        let us_rev = us["revision"].as_i64().unwrap();
        assert_eq!(us_rev, 2, "the host rewrite makes a new revision");
        let us_id = us["id"].as_str().unwrap().to_string();
        // nothing is active in prod-us while pending
        let msg = p.fails(&["run", "orders", "--env", "prod-us", "--no-progress"], 2);
        assert!(msg.contains("prod-us"), "{msg}");
        let d = p.diff(&["orders", "1", "2"]);
        assert_eq!(d["changes"][0]["path"], "destination.http.url", "{d}");

        // prod-eu runs at once, against the staging sink
        p.ok(&["run", "orders", "--env", "prod-eu", "--no-progress"]);
        // approve prod-us: alice asked for it, so she may not (four eyes, audited); bob does,
        // and then it runs revision 2 against the rewritten host
        let msg = p.fails(&["approve", &us_id], 2);
        assert!(msg.contains("four eyes"), "{msg}");
        // by the start of its id, as git takes a commit's
        let a = p.json_as("bob", &["approve", &us_id[..23]]);
        assert_eq!(a[0]["state"], "approved");
        assert_eq!(a[0]["decided_by"], "bob");
        let msg = p.fails(&["approve", &us_id], 2);
        assert!(msg.contains("pending"), "{msg}");
        p.ok(&["run", "orders", "--env", "prod-us", "--no-progress"]);
        let runs = p.json(&["runs", "--flow", "orders"]);
        let us_run = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["env"] == "prod-us")
            .unwrap()
            .clone();
        assert_eq!(us_run["revision"], us_rev);
        assert_eq!(us_run["status"], "succeeded");

        // a promotion can be rejected, with a reason; prod-us keeps what it had
        let again = promoted(
            &p.json(&["promote", "orders", "--from", "staging", "--to", "prod-us"]),
            "prod-us",
        );
        let id = again["id"].as_str().unwrap().to_string();
        let msg = p.fails(&["reject", &id, "--reason", ""], 2);
        assert!(msg.contains("reason"), "{msg}");
        let r = p.json(&["reject", &id, "--reason", "not this week"]);
        assert_eq!(r[0]["state"], "rejected");

        // a revision never active in the source environment cannot be promoted
        p.write(
            "orders.yaml",
            &flow("orders", "http://127.0.0.1:9", "    note: { const: x }", ""),
        );
        p.ok(&["deploy", "orders.yaml", "--env", "dev"]);
        let msg = p.fails(
            &[
                "promote",
                "orders",
                "--from",
                "staging",
                "--to",
                "prod-eu",
                "--revision",
                "3",
            ],
            2,
        );
        assert!(msg.contains("never active"), "{msg}");

        // the internal path, once the flow carries the label
        p.write(
            "orders.yaml",
            &flow("orders", "http://127.0.0.1:9", "", "internal: \"true\""),
        );
        p.ok(&["deploy", "orders.yaml", "--env", "dev"]);
        let out = p.json(&["promote", "orders", "--from", "dev", "--to", "internal"]);
        assert_eq!(promoted(&out, "internal")["state"], "active");

        // every action is in the audit log
        let audit = p.json(&["audit", "--flow", "orders", "--limit", "200"]);
        let actions: std::collections::BTreeSet<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        for a in ["deploy", "promote", "approve", "reject"] {
            assert!(actions.contains(a), "{a} missing from {actions:?}");
        }
        // snapshots are of an environment: one before each promotion that went ahead
        let snaps = p.json(&["audit", "--action", "snapshot"]);
        assert!(snaps.as_array().unwrap().len() >= 5, "{snaps}");
        let pending = p.json(&["promotions", "--status", "pending"]);
        assert!(pending.as_array().unwrap().is_empty(), "{pending}");
        p
    })
    .await;
    let _ = result;
    // prod-us hit the rewritten host only; the staging host got prod-eu's records
    assert_eq!(prod_us.sink().stats().applied, 30);
    assert_eq!(staging.sink().stats().applied, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_commands_and_backfill_leave_the_live_cursor_alone() {
    let sb = sandbox(200).await;
    let mut p = Project::new();
    p.env("SHOP_TOKEN", TOKEN);
    p.env("SHOP_URL", &sb.base_url());
    p.write("orders.yaml", &flow("orders", &sb.base_url(), "", ""));
    blocking(move || {
        p.ok(&["run", "orders.yaml", "--no-progress"]);
        let c = p.json(&["cursor", "show", "orders"]);
        let live = c["cursor"].clone();
        assert!(live.is_string(), "{c}");
        // backfill a past window: records are re-sent with their keys (skipped by the
        // ledger), and the live cursor stays
        let out = p.ok(&[
            "backfill",
            "orders",
            "--from",
            "2024-01-01T00:00:00Z",
            "--to",
            "2024-01-01T06:00:00Z",
            "--no-progress",
        ]);
        assert!(out.contains("succeeded"), "{out}");
        assert_eq!(p.json(&["cursor", "show", "orders"])["cursor"], live);
        // values are checked against the cursor's kind (a time here), nothing is written
        let msg = p.fails(
            &[
                "backfill",
                "orders",
                "--from",
                "yesterday",
                "--to",
                "2024-01-01T06:00:00Z",
                "--no-progress",
            ],
            2,
        );
        assert!(
            msg.contains(
                "--from `yesterday` is not a time: this flow's cursor is an RFC 3339 time"
            ),
            "{msg}"
        );
        assert!(msg.contains("2h or 7d"), "{msg}");
        let msg = p.fails(&["cursor", "set", "orders", "12345"], 2);
        assert!(msg.contains("`12345` is not a time"), "{msg}");
        assert_eq!(p.json(&["cursor", "show", "orders"])["cursor"], live);
        // a time can be given as how long ago
        let s = p.json(&["cursor", "set", "orders", "7d"]);
        let set = chrono::DateTime::parse_from_rfc3339(s["cursor"].as_str().unwrap()).unwrap();
        let ago = chrono::Utc::now().signed_duration_since(set);
        assert!(
            (ago - chrono::Duration::days(7)).num_seconds().abs() < 120,
            "{s}"
        );
        // set, then rewind to the start
        let s = p.json(&["cursor", "set", "orders", "2030-01-01T00:00:00Z"]);
        assert_eq!(
            s["before"],
            json!(set.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        );
        let r = p.json(&["cursor", "rewind", "orders", "--start"]);
        assert_eq!(r["cursor"], Value::Null);
        let msg = p.fails(&["cursor", "rewind", "orders"], 2);
        assert!(msg.contains("--start"), "{msg}");
        let audit = p.json(&["audit", "--flow", "orders"]);
        let actions: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert!(actions.contains(&"backfill"), "{actions:?}");
        assert_eq!(actions.iter().filter(|a| **a == "cursor").count(), 3);
    })
    .await;
    // every record delivered once in total
    let stats = sb.sink().stats();
    assert_eq!(stats.applied, 200);
}

/// A project where `staging` and `prod-us` are protected (edges lead there) and `lab` opts out.
fn protected_project(shop: &str) -> String {
    format!(
        r#"environments:
  dev:     {{ variables: {{ SHOP_URL: "{shop}" }}, secrets: [SHOP_TOKEN] }}
  staging: {{ variables: {{ SHOP_URL: "{shop}" }}, secrets: [SHOP_TOKEN] }}
  prod-us: {{ variables: {{ SHOP_URL: "{shop}" }}, secrets: [SHOP_TOKEN] }}
  lab:     {{ variables: {{ SHOP_URL: "{shop}" }}, secrets: [SHOP_TOKEN], deploy: direct }}
promotion:
  - {{ from: dev, to: [staging, lab] }}
  - {{ from: staging, to: prod-us, rules: {{ approval: true }} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_environments_take_content_only_by_promotion_and_allow_rollbacks() {
    let sb = sandbox(20).await;
    let mut p = Project::new();
    p.env("SHOP_TOKEN", TOKEN);
    p.write("ferry.yaml", &protected_project(&sb.base_url()));
    p.write("orders.yaml", &flow("orders", &sb.base_url(), "", ""));
    p.write(
        "edited.yaml",
        &flow("orders", &sb.base_url(), "    note: { const: x }", ""),
    );
    blocking(move || {
        p.ok(&["deploy", "orders.yaml", "--env", "dev"]);
        p.ok(&["promote", "orders", "--from", "dev", "--to", "staging"]);

        // deploy and run-with-a-changed-file into a protected environment: exit 2, naming the
        // edge and how to get the content there; nothing written.
        for (env, edge) in [
            ("staging", "dev → staging"),
            ("prod-us", "staging → prod-us"),
        ] {
            let msg = p.fails(&["deploy", "edited.yaml", "--env", env], 2);
            assert!(
                msg.contains(edge) && msg.contains("ferry promote orders"),
                "{msg}"
            );
            let msg = p.fails(&["run", "edited.yaml", "--env", env, "--no-progress"], 2);
            assert!(msg.contains(edge), "{msg}");
        }
        assert_eq!(revisions(&p, "orders").len(), 1);
        // The same content as what runs there: it just runs.
        let out = p.ok(&["run", "orders.yaml", "--env", "staging", "--no-progress"]);
        assert!(out.contains("succeeded"), "{out}");
        // clone and merge into it: refused the same way.
        let msg = p.fails(&["clone", "orders", "orders-exp", "--env", "staging"], 2);
        assert!(msg.contains("dev → staging"), "{msg}");
        p.ok(&["clone", "orders", "orders-exp", "--env", "dev"]);
        let msg = p.fails(
            &[
                "merge",
                "orders-exp",
                "--into",
                "orders",
                "--env",
                "staging",
            ],
            2,
        );
        assert!(msg.contains("dev → staging"), "{msg}");
        // `deploy: direct` opts out.
        p.ok(&["deploy", "edited.yaml", "--env", "lab"]);

        // A rollback is allowed: revision 2 reaches staging by promotion, then staging goes
        // back to revision 1, which ran there; revision 3 never ran there.
        p.ok(&["deploy", "edited.yaml", "--env", "dev"]);
        p.ok(&["promote", "orders", "--from", "dev", "--to", "staging"]);
        p.write(
            "third.yaml",
            &flow("orders", &sb.base_url(), "    note: { const: three }", ""),
        );
        p.ok(&["deploy", "third.yaml", "--env", "dev"]);
        let third = revisions(&p, "orders").last().unwrap()["number"]
            .as_i64()
            .unwrap();
        let r = p.json(&["revert", "orders", "--to", "1", "--env", "staging"]);
        assert_eq!(r["outcome"]["revision"]["number"], third + 1);
        let third = third.to_string();
        let msg = p.fails(&["revert", "orders", "--to", &third, "--env", "staging"], 2);
        assert!(msg.contains("never active there"), "{msg}");
        let msg = p.fails(
            &[
                "activate",
                "orders",
                "--revision",
                &third,
                "--env",
                "staging",
            ],
            2,
        );
        assert!(msg.contains("never active there"), "{msg}");
        let revert = p.json(&["audit", "--action", "revert"]);
        assert_eq!(revert[0]["env"], "staging", "{revert}");
        assert_eq!(revert[0]["actor"], "alice", "{revert}");

        // Every refusal is in the audit log.
        let refused = p.json(&["audit", "--action", "refused"]);
        let ops: Vec<&str> = refused
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["detail"]["operation"].as_str().unwrap())
            .collect();
        assert_eq!(
            ops,
            [
                "activate", "revert", "merge", "clone", "deploy", "deploy", "deploy", "deploy"
            ],
            "{refused}"
        );
    })
    .await;
}

#[test]
fn a_clone_is_a_draft_until_deployed_or_activated_and_show_round_trips() {
    let p = Project::new();
    p.write(
        "orders.yaml",
        &flow("orders", "http://127.0.0.1:9", "", "team: ops"),
    );
    p.ok(&["deploy", "orders.yaml"]);
    let out = p.ok(&["clone", "orders", "orders-exp"]);
    assert!(out.contains("draft"), "{out}");
    // Not active: not listed by `ferry flows` (which is what `ferry serve` schedules), and
    // not run by name.
    let names = |p: &Project| -> Vec<String> {
        p.json(&["flows"])
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&p), ["orders"]);
    let msg = p.fails(&["run", "orders-exp", "--no-progress"], 2);
    assert!(
        msg.contains("draft") && msg.contains("ferry activate"),
        "{msg}"
    );
    let h = p.json(&["history", "orders-exp"]);
    assert_eq!(h["revisions"][0]["active_in"], serde_json::json!([]), "{h}");

    // `ferry show` exports a revision as a flow file; deploying it gives the same hash.
    let yaml = p.ok(&["show", "orders"]);
    assert!(yaml.contains("name: orders\n"), "{yaml}");
    p.write("exported.yaml", &yaml);
    let out = p.json(&["deploy", "exported.yaml"]);
    assert_eq!(out[0]["created"], false, "unchanged content: {out}");
    let draft_hash = revisions(&p, "orders-exp")[0]["hash"].clone();
    p.write(
        "exp.yaml",
        &p.ok(&["show", "orders-exp", "--revision", "1"]),
    );
    let out = p.json(&["deploy", "exp.yaml"]);
    assert_eq!(out[0]["hash"], draft_hash, "{out}");
    assert_eq!(names(&p), ["orders", "orders-exp"], "deployed: it runs now");

    // Activating a draft makes it run, as a deploy would.
    p.ok(&["clone", "orders", "orders-b"]);
    assert_eq!(names(&p), ["orders", "orders-exp"]);
    let a = p.json(&["activate", "orders-b"]);
    assert_eq!(a["changed"], true, "{a}");
    assert_eq!(names(&p), ["orders", "orders-b", "orders-exp"]);
    let activations = p.json(&["audit", "--action", "activate"]);
    assert_eq!(activations[0]["flow"], "orders-b", "{activations}");
}

fn fan_out_project() -> &'static str {
    r#"environments:
  dev: {}
  staging: {}
  internal: {}
  qa: {}
promotion:
  - { from: dev, to: staging }
  - { from: dev, to: internal, when: { labels: { internal: "true" } } }
  - { from: dev, to: qa, rules: { approval: true } }
"#
}

#[test]
fn promotion_reports_skipped_edges_and_refuses_a_second_pending_request() {
    let p = Project::new();
    p.write("ferry.yaml", fan_out_project());
    // The flow reads SHOP_URL and SHOP_TOKEN, which these environments do not provide: use
    // a flow without them.
    let plain = flow("orders", "http://127.0.0.1:9", "", "team: ops")
        .replace("{{ env.SHOP_URL }}", "http://127.0.0.1:9")
        .replace("    auth:\n      bearer: { secret: SHOP_TOKEN }\n", "");
    p.write("orders.yaml", &plain);
    p.ok(&["deploy", "orders.yaml", "--env", "dev"]);
    let out = p.ok(&["promote", "orders", "--from", "dev"]);
    assert!(
        out.contains("dev → staging") && out.contains("taken"),
        "{out}"
    );
    let skipped = out
        .lines()
        .find(|l| l.contains("dev → internal"))
        .unwrap_or_else(|| panic!("the conditional edge is listed: {out}"));
    assert!(
        skipped.contains("skipped") && skipped.contains("label `internal`"),
        "{skipped}"
    );
    assert!(out.contains("waits for approval"), "{out}");
    let pending = p.json(&["promotions", "--status", "pending"]);
    let id = pending[0]["id"].as_str().unwrap().to_string();

    // Again: qa still waits for that revision, so it is refused naming the pending one.
    let msg = p.fails(&["promote", "orders", "--from", "dev"], 2);
    assert!(msg.contains(&id), "{msg}");
    assert_eq!(p.json(&["promotions"]).as_array().unwrap().len(), 2);
    let msg = p.fails(&["promote", "orders", "--from", "dev", "--to", "qa"], 2);
    assert!(msg.contains(&id), "{msg}");
    // The JSON report lists every edge too.
    let out = p.json(&["promote", "orders", "--from", "dev", "--to", "staging"]);
    let edges: Vec<(String, bool)> = out["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["to"].as_str().unwrap().to_string(), e["taken"] == true))
        .collect();
    assert_eq!(
        edges,
        [
            ("staging".to_string(), true),
            ("internal".to_string(), false),
            ("qa".to_string(), false)
        ]
    );
    assert_eq!(out["edges"][1]["unmet"][0]["label"], "internal", "{out}");
}

#[test]
fn snapshot_restore_says_what_became_of_cursors_and_restores_them_when_asked() {
    let p = Project::new();
    p.write("orders.yaml", &flow("orders", "http://127.0.0.1:9", "", ""));
    p.ok(&["deploy", "orders.yaml"]);
    p.ok(&["cursor", "set", "orders", "2024-03-01T00:00:00Z"]);
    p.ok(&["snapshot", "create", "before"]);
    p.ok(&["cursor", "set", "orders", "2024-09-01T00:00:00Z"]);

    let out = p.ok(&["snapshot", "restore", "before"]);
    assert!(out.contains("cursor NOT restored"), "{out}");
    assert!(out.contains("--with-cursors"), "{out}");
    let c = p.json(&["cursor", "show", "orders"]);
    assert_eq!(c["cursor"], "2024-09-01T00:00:00Z");

    let out = p.ok(&["snapshot", "restore", "before", "--with-cursors"]);
    assert!(
        out.contains("cursor restored: \"2024-09-01T00:00:00Z\" → \"2024-03-01T00:00:00Z\""),
        "{out}"
    );
    let c = p.json(&["cursor", "show", "orders"]);
    assert_eq!(c["cursor"], "2024-03-01T00:00:00Z");
    let r = p.json(&["snapshot", "restore", "before", "--with-cursors"]);
    assert_eq!(r["cursors"][0]["outcome"], "unchanged", "{r}");
    let moves = p.json(&["audit", "--action", "cursor"]);
    assert!(
        moves[0]["detail"]["why"]
            .as_str()
            .unwrap()
            .contains("snapshot restore before"),
        "{moves}"
    );
}

#[test]
fn tokens_are_created_once_listed_and_revoked() {
    let p = Project::new();
    let out = p.ferry(&["token", "create", "ci-bot", "--role", "operator"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(token.len(), 64, "{token}");
    let list = p.json(&["token", "list"]);
    assert_eq!(list[0]["name"], "ci-bot");
    assert_eq!(list[0]["role"], "operator");
    assert!(!list.to_string().contains(&token), "never shown again");
    let msg = p.fails(&["token", "create", "ci-bot", "--role", "viewer"], 2);
    assert!(msg.contains("already exists"), "{msg}");
    let msg = p.fails(&["token", "create", "admin", "--role", "viewer"], 2);
    assert!(msg.contains("server's own token"), "{msg}");
    let msg = p.fails(&["token", "create", "Not A Name", "--role", "viewer"], 2);
    assert!(msg.contains("not a token name"), "{msg}");
    p.ok(&["token", "revoke", "ci-bot"]);
    assert_eq!(p.json(&["token", "list"]), serde_json::json!([]));
    let msg = p.fails(&["token", "revoke", "ci-bot"], 2);
    assert!(msg.contains("no token named"), "{msg}");
    let audit = p.json(&["audit", "--action", "token_create"]);
    assert_eq!(audit[0]["actor"], "alice");
    assert_eq!(
        p.json(&["audit", "--action", "token_revoke"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// `retention:` prunes old ledger entries and run records with `ferry gc` (a dry run first),
/// audited; a backfill that reaches into the pruned window warns before it sends, and sends
/// the records whose keys were forgotten; one that starts after the bound does not warn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_state_and_a_backfill_into_the_pruned_window_warns() {
    let sb = sandbox(30).await;
    let mut p = Project::new();
    p.env("SHOP_TOKEN", TOKEN);
    p.env("SHOP_URL", &sb.base_url());
    p.write(
        "orders.yaml",
        &format!(
            "{}retention: {{ ledger: 30d, runs: 30d }}\n",
            flow("orders", &sb.base_url(), "", "")
        ),
    );
    let state = p.path().join(".ferry").join("state.db");
    let p = blocking(move || {
        let out = p.ok(&["run", "orders.yaml", "--no-progress"]);
        assert!(out.contains("succeeded"), "{out}");
        // Nothing is old yet.
        let dry = p.json(&["gc", "--dry-run"]);
        assert_eq!(dry[0]["ledger"], 0, "{dry}");
        assert_eq!(dry[0]["runs"], 0, "{dry}");
        p
    })
    .await;
    // Time passes: the first run and its deliveries are from 2020.
    age_ledger(&state).await;
    {
        use sqlx::Connection as _;
        let mut db = sqlx::SqliteConnection::connect(&format!("sqlite:{}", state.display()))
            .await
            .unwrap();
        let old = "2020-01-01T00:00:00.000Z";
        sqlx::query("UPDATE runs SET started_at = ?, finished_at = ?")
            .bind(old)
            .bind(old)
            .execute(&mut db)
            .await
            .unwrap();
        db.close().await.unwrap();
    }
    let p = blocking(move || {
        // A second run: the newest run, which is always kept.
        p.ok(&["run", "orders.yaml", "--no-progress"]);
        let dry = p.json(&["gc", "--dry-run"]);
        assert_eq!((dry[0]["ledger"].as_u64(), dry[0]["runs"].as_u64()), (Some(30), Some(1)), "{dry}");
        assert_eq!(p.json(&["runs", "--flow", "orders"]).as_array().unwrap().len(), 2, "a dry run deletes nothing");
        let out = p.ok(&["gc"]);
        assert!(
            out.contains("orders (revision 1): pruned 30 ledger entries, 0 settled dead letters, 1 run record"),
            "{out}"
        );
        assert_eq!(p.json(&["runs", "--flow", "orders"]).as_array().unwrap().len(), 1);
        let audit = p.json(&["audit", "--flow", "orders", "--action", "pruned"]);
        assert_eq!(audit[0]["detail"]["ledger"], 30, "{audit}");
        assert_eq!(audit[0]["actor"], "alice", "{audit}");
        // A second pass has nothing left to do.
        let again = p.json(&["gc"]);
        assert_eq!((again[0]["ledger"].as_u64(), again[0]["runs"].as_u64()), (Some(0), Some(0)));

        // A backfill from the flow's start reaches into the pruned window: it warns, and the
        // records whose keys were forgotten are sent again.
        let out = p.ferry(&[
            "backfill", "orders", "--from", "2024-01-01T00:00:00Z", "--to", "2030-01-01T00:00:00Z",
            "--no-progress", "--output", "json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("warning: the ledger of orders in `default` was pruned of keys delivered before")
                && err.contains("is sent again"),
            "{err}"
        );
        let run: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(run["run"]["counts"]["delivered"], 30, "{run}");
        // A window that starts after the bound does not warn.
        let out = p.ferry(&[
            "backfill", "orders", "--from", "1d", "--to", "2030-01-01T00:00:00Z", "--no-progress",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{}", text(&out));
        p
    })
    .await;
    // `ferry serve` prunes by itself: the backfill's deliveries, aged again, go at its first
    // pass (`--gc-every 1s`), audited as the server.
    age_ledger(&state).await;
    blocking(move || {
        let mut cmd = std::process::Command::new(ferry_e2e::ferry_bin());
        cmd.args(["serve", "--no-api", "--gc-every", "1s"])
            .current_dir(p.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .env_remove("FERRY_STATE")
            .env_remove("FERRY_DATABASE")
            .env_remove("FERRY_ENV");
        for (k, v) in &p.envs {
            cmd.env(k, v);
        }
        let mut serve = cmd.spawn().unwrap();
        let started = std::time::Instant::now();
        let pruned_by_serve = loop {
            let audit = p.json(&["audit", "--flow", "orders", "--action", "pruned"]);
            if let Some(e) = audit
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["actor"].as_str().is_some_and(|a| a.starts_with("serve:")))
            {
                break e.clone();
            }
            if started.elapsed() > LIMIT {
                let _ = serve.kill();
                panic!("ferry serve did not prune: {audit:#}");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &serve.id().to_string()])
            .status();
        let status = serve.wait().unwrap();
        assert!(status.success());
        assert!(
            pruned_by_serve["detail"]["ledger"].as_u64().unwrap() >= 30,
            "{pruned_by_serve:#}"
        );
    })
    .await;
}

/// Moves every ledger entry of the state file at `state` to 2020 (as if time passed).
async fn age_ledger(state: &Path) {
    use sqlx::Connection as _;
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite:{}", state.display()))
        .await
        .unwrap();
    // The ledger keeps delivery times as milliseconds since the epoch.
    sqlx::query("UPDATE ledger SET delivered_at = ?")
        .bind(1_577_836_800_000_i64)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
}
