//! Map-only: `ferry run` as a streaming mapper — a JSON Lines file in, the example flow's field
//! map, JSON Lines out on standard output — next to `jq -c` doing the same mapping on the same
//! file, each in a process of its own, measured the same way (wall time, CPU time and peak RSS
//! from `/proc`).
//!
//! ```text
//! cargo build --release -p ferry -p ferry-benches
//! ./target/release/map-bench [--records 1000000] [--rounds 1] [--dir DIR] [--no-jq]
//! ```
//!
//! The input is the sandbox's orders (the example flow's source records: nested buyer, an
//! array of items), one per line, written once to `DIR/orders.jsonl` (a temporary folder when
//! `--dir` is not given; an existing file with the right number of lines is reused). ferry
//! reads it as `source: { file: { path: orders.jsonl } }` and writes to `destination: {
//! stdout: {} }`, redirected to a file whose lines are counted and checked afterwards. `jq`
//! gets the example flow's map written as a jq program; it has no time zones, so `placed_on`
//! is the UTC date there (the work is the same).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ferry_benches::measure::{Usage, measure_to};
use ferry_benches::sibling;
use ferry_sandbox::{Sandbox, SandboxConfig};

/// The example flow's map as jq: the same filter, fields, transforms and lookups.
const JQ_PROGRAM: &str = r#"select(.state != "draft") | {
  order_ref: .number,
  customer: {
    email: (.buyer.email | sub("^\\s+"; "") | sub("\\s+$"; "") | ascii_downcase),
    name: "\(.buyer.first) \(.buyer.last)"
  },
  total_cents: (.total | tonumber * 100 | round),
  currency: ((.currency // "EUR") | ascii_upcase),
  placed_on: (.created | strftime("%Y-%m-%d")),
  priority: (if .shipping == "express" then "high" else "normal" end),
  channel: "webshop",
  items: [.items[] | {sku: .sku, qty: (.qty | tonumber)}]
}"#;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn count_lines(path: &Path) -> u64 {
    let f = std::fs::File::open(path).expect("output");
    std::io::BufReader::with_capacity(1 << 20, f)
        .split(b'\n')
        .count() as u64
}

/// Writes `records` sandbox orders to `path`, one per line, unless it already holds them.
fn write_input(path: &Path, records: u64) -> (u64, u64) {
    if path.exists() && count_lines(path) == records {
        let bytes = std::fs::metadata(path).expect("input").len();
        return (records, bytes);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sandbox = rt
        .block_on(Sandbox::start(SandboxConfig {
            records,
            ..SandboxConfig::default()
        }))
        .expect("sandbox");
    let file = std::fs::File::create(path).expect("input file");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut bytes = 0;
    for id in 1..=records {
        let mut order = sandbox.source().record(id).expect("order");
        invoice_details(&mut order, id);
        let line = order.to_string();
        bytes += line.len() as u64 + 1;
        out.write_all(line.as_bytes()).expect("write");
        out.write_all(b"\n").expect("write");
    }
    out.flush().expect("flush");
    rt.block_on(sandbox.shutdown());
    (records, bytes)
}

/// What an invoice carries besides what the example flow maps (addresses, tax lines):
/// read and parsed with every record, then left out by the map. It brings the sandbox's orders
/// (about 340 bytes) to about 700.
fn invoice_details(order: &mut serde_json::Value, id: u64) {
    let city = ["Hamburg", "Rotterdam", "Antwerp", "Gdańsk"][(id % 4) as usize];
    let country = ["DE", "NL", "BE", "PL"][(id % 4) as usize];
    let address = |kind: &str| {
        serde_json::json!({
            "name": format!("{kind} {id}"),
            "street": format!("{} Harbour Road", id % 997 + 1),
            "city": city,
            "postcode": format!("{:05}", id % 100_000),
            "country": country,
        })
    };
    if let Some(o) = order.as_object_mut() {
        o.insert("billing_address".into(), address("Billing"));
        o.insert("shipping_address".into(), address("Shipping"));
        o.insert(
            "tax_lines".into(),
            serde_json::json!([
                {"rate": "0.19", "amount": format!("{}.{:02}", id % 50, id % 100), "kind": "vat"},
                {"rate": "0.07", "amount": format!("{}.{:02}", id % 7, id % 100), "kind": "reduced"},
            ]),
        );
    }
}

/// The example flow reading `orders.jsonl` and writing to standard output.
fn write_flow(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../flows/orders-to-warehouse.yaml"
    ))
    .expect("example flow");
    let at = |block: &str| text.find(&format!("\n{block}:\n")).expect(block) + 1;
    let flow = format!(
        "{}source:\n  file: {{ path: orders.jsonl }}\n{}destination:\n  stdout: {{}}\n{}",
        &text[..at("source")],
        &text[at("map")..at("destination")],
        &text[at("policy")..]
    );
    let path = dir.join("map-only.yaml");
    std::fs::write(&path, flow).expect("flow");
    path
}

fn report(name: &str, records: u64, written: u64, u: &Usage) {
    println!(
        "{name:<6} {:>9.0} records/s  {:>6.2} s  {:>5.2} µs CPU/record  peak RSS {:>6.1} MiB  {written} lines out{}",
        records as f64 / u.secs,
        u.secs,
        u.cpu_secs * 1e6 / records.max(1) as f64,
        u.max_rss_kib as f64 / 1024.0,
        if u.ok { "" } else { "  (exit status not 0)" }
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records: u64 = arg(&args, "--records")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = arg(&args, "--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let with_jq = !args.iter().any(|a| a == "--no-jq");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = arg(&args, "--dir").map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("dir");
    let input = dir.join("orders.jsonl");
    let (records, bytes) = write_input(&input, records);
    println!(
        "input: {records} orders, {:.0} bytes per line on average ({})",
        bytes as f64 / records as f64,
        input.display()
    );
    let flow = write_flow(&dir);
    let ferry = sibling("ferry");
    let out = dir.join("out.jsonl");
    for round in 1..=rounds {
        println!("round {round}");
        // Fresh state each time: the run is the whole job.
        let _ = std::fs::remove_dir_all(dir.join(".ferry"));
        let mut cmd = Command::new(&ferry);
        cmd.arg("run")
            .arg(&flow)
            .arg("--no-progress")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .env_remove("FERRY_STATE")
            .env_remove("FERRY_DATABASE");
        let u = measure_to(cmd, Stdio::from(std::fs::File::create(&out).expect("out")));
        report("ferry", records, count_lines(&out), &u);
        if with_jq {
            let mut cmd = Command::new("jq");
            cmd.arg("-c")
                .arg(JQ_PROGRAM)
                .arg(&input)
                .stdin(Stdio::null());
            let jq_out = dir.join("out-jq.jsonl");
            let u = measure_to(
                cmd,
                Stdio::from(std::fs::File::create(&jq_out).expect("out")),
            );
            report("jq", records, count_lines(&jq_out), &u);
        }
    }
}
