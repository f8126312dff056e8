//! `docker-compose.yml`, its Prometheus configuration and the `Dockerfile` agree with the
//! repository: no engine runs them here (CI only parses the compose file with `docker-compose
//! config`), so a renamed flow variable, a moved file or a changed port would otherwise go
//! unnoticed until someone runs `docker compose up`.

use std::collections::BTreeSet;
use std::path::Path;

use ferry_e2e::workspace;
use serde_json::Value;

/// The port `ferry serve` listens on inside the image (its default command).
const API_PORT: &str = "8787";

fn read(path: &str) -> String {
    let p = workspace().join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn compose() -> Value {
    yaml("docker-compose.yml")
}

fn services(compose: &Value) -> &serde_json::Map<String, Value> {
    compose["services"]
        .as_object()
        .expect("docker-compose.yml has `services`")
}

/// The ferry workers: services that run the image's default command, `ferry serve`.
fn workers(compose: &Value) -> Vec<(&String, &Value)> {
    services(compose)
        .iter()
        .filter(|(name, _)| name.starts_with("ferry-"))
        .collect()
}

/// `./host/path:/container/path[:ro]` bind mounts of a service, as (host, container).
fn bind_mounts(service: &Value) -> Vec<(String, String)> {
    let Some(volumes) = service["volumes"].as_array() else {
        return Vec::new();
    };
    volumes
        .iter()
        .filter_map(Value::as_str)
        .filter(|v| v.starts_with("./"))
        .map(|v| {
            let mut parts = v.split(':');
            let host = parts.next().unwrap_or_default().to_string();
            let container = parts.next().unwrap_or_default().to_string();
            (host, container)
        })
        .collect()
}

fn env_var<'a>(service: &'a Value, name: &str) -> Option<&'a str> {
    service["environment"][name].as_str()
}

/// Names a flow file reads from the environment: `{{ env.NAME }}` and `{ secret: NAME }`.
fn variables_of_flow(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (marker, end) in [("{{ env.", "}}"), ("secret: ", "}")] {
        for (i, _) in text.match_indices(marker) {
            let rest = &text[i + marker.len()..];
            let name = rest[..rest.find(end).unwrap_or(rest.len())].trim();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn the_compose_file_has_the_store_the_broker_the_sandbox_prometheus_and_two_workers() {
    let c = compose();
    let s = services(&c);
    for name in ["postgres", "rabbitmq", "sandbox", "prometheus"] {
        assert!(
            s.contains_key(name),
            "docker-compose.yml lacks service {name}"
        );
    }
    let workers = workers(&c);
    assert_eq!(
        workers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["ferry-1", "ferry-2"]
    );
    let mut host_ports = BTreeSet::new();
    for (name, w) in &workers {
        assert_eq!(w["build"], ".", "{name} is built from ./Dockerfile");
        for dep in ["postgres", "rabbitmq"] {
            assert_eq!(
                w["depends_on"][dep]["condition"], "service_healthy",
                "{name} waits for a healthy {dep}"
            );
        }
        let db = env_var(w, "FERRY_DATABASE").unwrap_or_default();
        assert!(
            db.starts_with("postgres://") && db.contains("@postgres:5432/ferry"),
            "{name}'s FERRY_DATABASE points at the postgres service's database ferry: {db}"
        );
        assert!(
            env_var(w, "FERRY_API_TOKEN").is_some(),
            "{name} listens beyond loopback, which needs FERRY_API_TOKEN"
        );
        let ports: Vec<&str> = w["ports"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} publishes its API"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(ports.len(), 1, "{name}: {ports:?}");
        let (host, container) = ports[0].rsplit_once(':').expect("HOST:CONTAINER");
        assert_eq!(container, API_PORT, "{name} publishes the API port");
        assert!(host_ports.insert(host.to_string()), "{name} reuses {host}");
    }
    assert_eq!(
        s["postgres"]["environment"]["POSTGRES_DB"], "ferry",
        "the database the workers' URL names"
    );
    for (name, test) in [
        ("postgres", "pg_isready"),
        ("rabbitmq", "rabbitmq-diagnostics"),
    ] {
        let check = s[name]["healthcheck"]["test"].to_string();
        assert!(
            check.contains(test),
            "{name}'s healthcheck runs {test}: {check}"
        );
    }
}

#[test]
fn every_path_the_compose_file_names_exists_in_the_repository() {
    let c = compose();
    let mut checked = 0;
    for (name, service) in services(&c) {
        if let Some(context) = service["build"].as_str() {
            assert!(
                workspace().join(context).join("Dockerfile").is_file(),
                "{name} builds {context}, which has no Dockerfile"
            );
        }
        for (host, container) in bind_mounts(service) {
            assert!(
                workspace().join(&host).exists(),
                "{name} mounts {host} at {container}: no such file or folder in the repository"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "flows and Prometheus' two files are mounted");
}

#[test]
fn the_workers_set_every_variable_the_mounted_flows_read() {
    let c = compose();
    for (name, w) in workers(&c) {
        let (flows, _) = bind_mounts(w)
            .into_iter()
            .find(|(_, container)| container == "/flows")
            .unwrap_or_else(|| panic!("{name} mounts the example flows at /flows"));
        let mut seen = 0;
        for entry in std::fs::read_dir(workspace().join(&flows)).expect("the flows folder") {
            let path = entry.expect("a folder entry").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a flow file");
            for var in variables_of_flow(&text) {
                seen += 1;
                assert!(
                    env_var(w, &var).is_some(),
                    "{} reads {var}, which {name} does not set",
                    path.display()
                );
            }
        }
        assert!(seen > 0, "the example flows read SHOP_URL, WMS_URL, …");
    }
}

#[test]
fn prometheus_scrapes_both_workers_and_loads_the_alert_rules() {
    let c = compose();
    let prometheus = &services(&c)["prometheus"];
    let mounts = bind_mounts(prometheus);
    let (config, _) = mounts
        .iter()
        .find(|(_, container)| container == "/etc/prometheus/prometheus.yml")
        .expect("Prometheus' configuration is mounted from the repository");
    let config_path = config.trim_start_matches("./");
    let p = yaml(config_path);

    let targets: BTreeSet<&str> = p["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .filter(|job| job["metrics_path"].as_str().unwrap_or("/metrics") == "/metrics")
        .flat_map(|job| job["static_configs"].as_array().into_iter().flatten())
        .flat_map(|s| s["targets"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    for (name, _) in workers(&c) {
        let target = format!("{name}:{API_PORT}");
        assert!(
            targets.contains(target.as_str()),
            "{config_path} does not scrape {target}: {targets:?}"
        );
    }

    // Rule files are relative to the configuration inside the container: each must be in the
    // repository and mounted beside it.
    let rules = p["rule_files"].as_array().expect("rule_files");
    assert!(!rules.is_empty());
    let dir = Path::new(config_path).parent().expect("a folder");
    for rule in rules.iter().filter_map(Value::as_str) {
        assert!(
            workspace().join(dir).join(rule).is_file(),
            "{config_path} loads {rule}, which is not beside it"
        );
        let inside = format!("/etc/prometheus/{rule}");
        assert!(
            mounts.iter().any(|(_, container)| *container == inside),
            "{rule} is not mounted at {inside}"
        );
    }
}

#[test]
fn the_dockerfile_builds_ferry_on_the_workspace_toolchain_and_runs_it_unprivileged() {
    let dockerfile = read("Dockerfile");
    // One line per instruction: continuation lines joined.
    let joined = dockerfile.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let instruction = |word: &str| -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(word))
            .filter_map(|rest| rest.strip_prefix(' '))
            .map(str::trim)
            .collect()
    };

    let cargo = read("Cargo.toml");
    let rust_version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("the workspace's rust-version")
        .trim_matches('"');
    assert!(
        instruction("ARG").contains(&format!("RUST_VERSION={rust_version}").as_str()),
        "the build image's Rust is the workspace's rust-version {rust_version}"
    );
    assert!(dockerfile.contains("cargo build --release -p ferry --locked"));

    let users = instruction("USER");
    let user = users.last().expect("the image sets a USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        !["", "0", "root"].contains(&uid),
        "the image runs as root: USER {user}"
    );

    let health = instruction("HEALTHCHECK");
    let health = health.last().expect("the image has a HEALTHCHECK");
    assert!(
        health.contains("/healthz") && health.contains(&format!("127.0.0.1/{API_PORT}")),
        "the HEALTHCHECK asks /healthz on the port serve listens on: {health}"
    );
    assert_eq!(instruction("EXPOSE"), [API_PORT]);
    assert_eq!(instruction("ENTRYPOINT"), [r#"["ferry"]"#]);
    assert_eq!(
        instruction("CMD").last().copied(),
        Some(format!(r#"["serve", "--listen", "0.0.0.0:{API_PORT}"]"#).as_str())
    );

    // Every file COPY takes from the build context exists (COPY --from takes from a stage).
    for copy in instruction("COPY") {
        if copy.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = copy.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(
                workspace().join(source).exists(),
                "COPY {source}: not in the repository"
            );
        }
    }
}

#[test]
fn variables_are_found_in_flow_text() {
    let names = variables_of_flow(
        "url: \"{{ env.SHOP_URL }}/x\"\nauth: { bearer: { secret: SHOP_TOKEN } }\nurl: { secret: AMQP_URL }\n",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["AMQP_URL", "SHOP_TOKEN", "SHOP_URL"]
    );
}
