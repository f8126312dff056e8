//! What ferry's tests need from the machine, and what happens when it is not there.
//!
//! Some tests talk to real servers (PostgreSQL, RabbitMQ) or drive real programs (chromium).
//! On a developer's fresh clone one of them may be missing; the test then **skips with a loud
//! message** naming what is missing and how to get it, written straight to stderr so the test
//! harness does not swallow it. When the `CI` environment variable is set (as `.ci/run` sets
//! it), a missing prerequisite **fails** the test instead: CI installs or starts everything, so
//! a skip there would hide a backend that is not being tested.
//!
//! Every test with such a prerequisite asks through this crate, so the rule is written once.
//!
//! # Layout
//! - [`in_ci`], [`missing`]: the rule itself.
//! - [`postgres_url`], [`rabbitmq_url`]: the servers, checked by a TCP connect to their address.
//! - [`program`]: a program on `PATH` (or named by an environment variable).
//! - [`proxy`]: a TCP proxy a test puts between ferry and a server, to cut its connections
//!   without stopping the shared server.
//! - [`damage`]: damaging one table of a SQLite state file, as a disk or a careless copy does.

pub mod damage;
pub mod proxy;

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// PostgreSQL of the tests when `FERRY_TEST_PG_URL` is not set.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// RabbitMQ of the tests when `FERRY_TEST_AMQP_URL` is not set.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

const START_PG: &str = "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
     (Debian's postgresql package; database `test`, trust auth on 127.0.0.1), or point FERRY_TEST_PG_URL at one";
const START_AMQP: &str = "start it with `rabbitmq-server -detached` (Debian's rabbitmq-server package; \
     guest/guest on 127.0.0.1:5672), or point FERRY_TEST_AMQP_URL at one";

/// True when running under CI: `CI` is set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE"))
}

/// A prerequisite of `test` is missing: under CI this panics (the test fails) with `what` and
/// `how`; otherwise it writes a loud skip message to stderr and returns, and the caller skips.
pub fn missing(test: &str, what: &str, how: &str) {
    if in_ci() {
        panic!("{test}: {what}; CI (the `CI` variable is set) never skips a test: {how}");
    }
    // Straight to stderr, past the test harness's capture: a skip must be seen in every run.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!! SKIPPED `{test}`: {what}. NOT TESTED on this machine. To run it: {how}. \
         (Under CI, with `CI` set, this fails instead.) !!!!!\n"
    );
}

/// The PostgreSQL URL of the tests, or `None` after [`missing`] when no server answers there
/// (or `FERRY_TEST_PG=skip` asks to skip outside CI).
pub fn postgres_url(test: &str) -> Option<String> {
    let url = std::env::var("FERRY_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string());
    server(test, "PostgreSQL", &url, 5432, "FERRY_TEST_PG", START_PG)
}

/// The RabbitMQ (AMQP 0-9-1) URL of the tests, or `None` after [`missing`] when no broker
/// answers there (or `FERRY_TEST_AMQP=skip` asks to skip outside CI).
pub fn rabbitmq_url(test: &str) -> Option<String> {
    let url = std::env::var("FERRY_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_string());
    server(test, "RabbitMQ", &url, 5672, "FERRY_TEST_AMQP", START_AMQP)
}

/// A program: the path in `env_var` when set, else the first of `names` on `PATH`; `None` after
/// [`missing`] when there is none.
pub fn program(test: &str, env_var: &str, names: &[&str], how: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
        missing(
            test,
            &format!("{env_var}={} is not a file", p.display()),
            how,
        );
        return None;
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        missing(
            test,
            &format!("no {} found on PATH", names.join(" or ")),
            how,
        );
    }
    found
}

fn server(
    test: &str,
    name: &str,
    url: &str,
    default_port: u16,
    skip_var: &str,
    how: &str,
) -> Option<String> {
    if std::env::var(skip_var).as_deref() == Ok("skip") {
        missing(test, &format!("{skip_var}=skip"), how);
        return None;
    }
    let Some(addr) = address(url, default_port) else {
        missing(
            test,
            &format!("{name} URL `{url}` names no host I can reach"),
            how,
        );
        return None;
    };
    if reachable(&addr) {
        Some(url.to_string())
    } else {
        missing(test, &format!("{name} is not reachable at {addr}"), how);
        None
    }
}

/// `host:port` of a URL like `scheme://user:pw@host:port/path?query`.
fn address(url: &str, default_port: u16) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() {
        return None;
    }
    let has_port = match host_port.rfind(':') {
        Some(i) => !host_port[i..].contains(']'),
        None => false,
    };
    Some(if has_port {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    })
}

fn reachable(addr: &str) -> bool {
    let addrs: Vec<SocketAddr> = match addr.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => return false,
    };
    addrs
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_urls() {
        assert_eq!(
            address("postgres://postgres@127.0.0.1:5432/test", 1).as_deref(),
            Some("127.0.0.1:5432")
        );
        assert_eq!(
            address("amqp://guest:guest@localhost/%2f", 5672).as_deref(),
            Some("localhost:5672")
        );
        assert_eq!(
            address("postgres://[::1]/x", 5432).as_deref(),
            Some("[::1]:5432")
        );
        assert_eq!(
            address("postgres://[::1]:6/x", 5432).as_deref(),
            Some("[::1]:6")
        );
        assert_eq!(address("postgres:///test", 5432), None);
    }

    #[test]
    fn a_closed_port_is_not_reachable() {
        // Bind, learn the port, close: nothing listens there afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        assert!(!reachable(&format!("127.0.0.1:{port}")));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = listener.local_addr().expect("addr");
        assert!(reachable(&open.to_string()));
    }
}
