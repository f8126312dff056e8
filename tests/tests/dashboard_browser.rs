//! The dashboard in a real headless browser (Debian's `chromium`): log in with the token, see
//! a run with its revision, replay a dead letter, approve a promotion — each checked on the page
//! and in the state store.
//!
//! # How the browser is driven
//! Chromium is started with `--remote-debugging-pipe` and spoken to with the Chrome DevTools
//! Protocol over that pipe (NUL-separated JSON on file descriptors 3 and 4, the transport
//! Playwright uses by default). No port to find, no websocket client, no driver binary: a shell
//! `exec` wires the child's fd 3 and 4 to its stdin and stdout pipes. The test navigates with
//! `Page.navigate`, fills and clicks with `Runtime.evaluate` (a real form submission, with the
//! browser's own cookies and Origin header), and polls the page until what it waits for shows.
//!
//! Without chromium (or with `FERRY_TEST_BROWSER=skip`) the test skips with a loud message
//! saying how to install it — and fails under CI (`ferry_testkit`). `FERRY_CHROMIUM` names
//! another binary. `FERRY_TEST_SCREENSHOTS=DIR` saves a PNG of each page visited.

mod server_world;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use ferry_store::{DlqFilter, DlqState, PromotionState};
use serde_json::{Value, json};
use server_world::{API_TOKEN, FLOW, ServerWorld};

/// Longest wait for one page condition.
const WAIT: Duration = Duration::from_secs(60);
/// Longest wait for one protocol answer.
const CALL_WAIT: Duration = Duration::from_secs(60);

/// The chromium binary, or `None` after a loud skip message (a failure under CI).
fn chromium(test: &str) -> Option<std::path::PathBuf> {
    if std::env::var("FERRY_TEST_BROWSER").as_deref() == Ok("skip") {
        ferry_testkit::missing(test, "FERRY_TEST_BROWSER=skip", "unset FERRY_TEST_BROWSER");
        return None;
    }
    ferry_testkit::program(
        test,
        "FERRY_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
        "install Debian's package (`apt-get install chromium`; .ci/run does this when it is missing) or point FERRY_CHROMIUM at a binary",
    )
}

/// A headless chromium spoken to over the DevTools pipe.
struct Browser {
    child: Child,
    to: ChildStdin,
    from: Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
    stderr_path: std::path::PathBuf,
}

impl Browser {
    fn launch(bin: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let stderr_path = profile.path().join("chromium.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        // fd 3: what chromium reads (our stdin pipe); fd 4: what it writes (our stdout pipe).
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 0</dev/null 1>/dev/null")
            .arg(bin)
            .args([
                "--headless=new",
                "--remote-debugging-pipe",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let to = child.stdin.take().expect("stdin");
        let out = child.stdout.take().expect("stdout");
        let (tx, from) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf)
                            && tx.send(v).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to,
            from,
            next_id: 0,
            session: String::new(),
            _profile: profile,
            stderr_path,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}), false);
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
            false,
        );
        b.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        b.call("Page.enable", json!({}), true);
        b.call("Runtime.enable", json!({}), true);
        b
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends a command (to the page's session when `paged`) and waits for its answer.
    fn call(&mut self, method: &str, params: Value, paged: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if paged {
            msg["sessionId"] = Value::from(self.session.clone());
        }
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(0);
        if let Err(e) = self.to.write_all(&bytes).and_then(|()| self.to.flush()) {
            panic!(
                "chromium's pipe closed ({e}); its stderr:\n{}",
                self.stderr()
            );
        }
        let deadline = Instant::now() + CALL_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok(v) if v["id"] == id => {
                    if let Some(e) = v.get("error") {
                        return json!({"__error": e});
                    }
                    return v["result"].clone();
                }
                Ok(_) => {} // an event, or another answer
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "chromium did not answer {method} within {CALL_WAIT:?}; its stderr:\n{}",
                        self.stderr()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("chromium exited; its stderr:\n{}", self.stderr())
                }
            }
        }
    }

    /// Evaluates JavaScript in the page; `None` when it threw or the page was between
    /// documents.
    fn eval(&mut self, expr: &str) -> Option<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            true,
        );
        if r.get("__error").is_some() || r.get("exceptionDetails").is_some() {
            return None;
        }
        Some(r["result"]["value"].clone())
    }

    /// Waits until `cond` (a JavaScript expression) is true in a fully loaded page.
    fn wait_for(&mut self, cond: &str, what: &str) {
        let expr = format!("document.readyState === 'complete' && !!({cond})");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.eval(&expr) == Some(Value::Bool(true)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let url = self.eval("location.href").unwrap_or_default();
        let text = self.text();
        panic!("waited {WAIT:?} for {what} ({cond}); the page is {url}:\n{text}");
    }

    fn goto(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}), true);
        assert!(
            r.get("__error").is_none() && r.get("errorText").is_none(),
            "navigating to {url}: {r}"
        );
    }

    fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn path(&mut self) -> String {
        self.eval("location.pathname + location.search")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Clicks the first element matching `selector` (a real click event, so a submit
    /// button submits its form as a person's click would).
    fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) return false; e.click(); return true; }})()",
            s = Value::from(selector)
        );
        assert_eq!(
            self.eval(&js),
            Some(Value::Bool(true)),
            "nothing matches {selector}:\n{}",
            self.text()
        );
    }

    fn screenshot(&mut self, name: &str) {
        let Ok(dir) = std::env::var("FERRY_TEST_SCREENSHOTS") else {
            return;
        };
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}), true);
        if let Some(data) = r["data"].as_str() {
            use base64::Engine as _;
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) {
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(
                    std::path::Path::new(&dir).join(format!("{name}.png")),
                    bytes,
                );
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_see_a_run_replay_a_dead_letter_and_approve_a_promotion() {
    let Some(bin) = chromium("log_in_see_a_run_replay_a_dead_letter_and_approve_a_promotion")
    else {
        return;
    };
    let w = ServerWorld::start(None).await;
    // A promotion waiting for approval, made as `ferry promote` makes it.
    let promoted = ferry_engine::lifecycle::promote(
        &w.store,
        &w.project,
        FLOW,
        "dev",
        Some("prod"),
        None,
        &ferry_engine::governance::Actor::cli("tests"),
    )
    .await
    .expect("promote");
    let promoted = promoted.promotions();
    assert_eq!(promoted[0].state, PromotionState::Pending);
    let promotion = promoted[0].id;
    let pending: Vec<_> = w
        .store
        .dead_letters(&DlqFilter {
            state: Some(DlqState::Pending),
            ..DlqFilter::default()
        })
        .await
        .unwrap();
    assert!(!pending.is_empty());

    let base = w.base.clone();
    let run_id = w.seed_run.id.to_string();
    // The browser is driven from a blocking thread; the server runs on this runtime.
    let replayed_path = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch(&bin.to_string_lossy());

        // Not logged in: the dashboard sends the browser to the login form.
        b.goto(&format!("{base}/"));
        b.wait_for("location.pathname === '/login' && document.querySelector('#token')", "the login form");
        b.screenshot("1-login");
        // A wrong token is refused.
        b.eval("document.querySelector('#token').value = 'not-the-token-at-all'");
        b.click("#login");
        b.wait_for(
            "location.pathname === '/login' && document.body.innerText.includes('That is not an API token')",
            "the refusal",
        );
        // The right one opens the overview.
        b.eval(&format!("document.querySelector('#token').value = {}", Value::from(API_TOKEN)));
        b.click("#login");
        b.wait_for("location.pathname === '/' && document.querySelector('#runs')", "the overview");
        b.screenshot("2-overview");
        assert_eq!(
            b.eval("document.cookie"),
            Some(Value::from("")),
            "the session cookie is HttpOnly: scripts cannot read it"
        );

        // See the run: in the flow table and the recent runs, with its revision tag and counts.
        let flows = b.eval("document.querySelector('#flows').innerText").unwrap();
        let flows = flows.as_str().unwrap();
        assert!(flows.contains(FLOW) && flows.contains("dev") && flows.contains("r1 ·"), "{flows}");
        assert!(flows.contains("not scheduled"), "{flows}");
        let runs = b.eval("document.querySelector('#runs').innerText").unwrap();
        let runs = runs.as_str().unwrap().to_string();
        let short = &run_id[run_id.len() - 8..];
        assert!(runs.contains(short), "the seed run is listed:\n{runs}");
        assert!(runs.contains("succeeded") && runs.contains("r1 ·"), "{runs}");
        // Its page has the counts.
        b.click(&format!("a[href='/runs/{run_id}']"));
        b.wait_for(&format!("location.pathname === '/runs/{run_id}'"), "the run page");
        let text = b.text();
        assert!(text.contains("Dead letters from this run"), "{text}");
        assert!(text.contains("manual") && text.contains("succeeded"), "{text}");
        b.screenshot("3-run");

        // The DLQ, filtered to pending entries; replay the first from the list.
        b.goto(&format!("{base}/dlq?status=pending&flow={FLOW}"));
        b.wait_for(
            "location.pathname === '/dlq' && document.querySelector('#dlq button.replay')",
            "a pending entry with a replay button",
        );
        b.screenshot("4-dlq");
        let href = b
            .eval("document.querySelector('#dlq button.replay').closest('form').getAttribute('action')")
            .and_then(|v| v.as_str().map(str::to_string))
            .expect("replay form");
        b.click("#dlq button.replay");
        b.wait_for("location.search.includes('done=')", "the replay's result");
        let path = b.path();
        assert!(path.ends_with("?done=replayed"), "{path}:\n{}", b.text());
        let text = b.text();
        assert!(text.contains("Replayed: the record was delivered"), "{text}");
        assert!(b.eval("document.querySelector('#state').innerText").unwrap().as_str().unwrap().contains("replayed"));
        b.screenshot("5-replayed");

        // Promotions: approve the pending one.
        b.goto(&format!("{base}/promotions"));
        b.wait_for(
            "location.pathname === '/promotions' && document.querySelector('#pending button.approve')",
            "the pending promotion",
        );
        b.screenshot("6-promotions");
        b.click("#pending button.approve");
        b.wait_for("location.search === '?done=approved'", "the approval");
        let text = b.text();
        assert!(text.contains("Approved: the revision is live"), "{text}");
        assert!(text.contains("Nothing is waiting."), "{text}");
        b.screenshot("7-approved");
        href
    })
    .await
    .expect("browser session");

    // The store agrees with what the pages said.
    let entry: uuid::Uuid = replayed_path
        .trim_start_matches("/dlq/")
        .trim_end_matches("/replay")
        .parse()
        .expect("entry id in the form action");
    let e = w.store.dead_letter(entry).await.unwrap().unwrap();
    assert_eq!(e.state, DlqState::Replayed);
    let history = w.store.dead_letter_history(entry).await.unwrap();
    // Done in the name of the token the session was opened with.
    assert_eq!(
        history.last().unwrap().actor.as_deref(),
        Some("dashboard:admin")
    );
    let p = w.store.promotion(promotion).await.unwrap().unwrap();
    assert_eq!(p.state, PromotionState::Approved);
    assert_eq!(p.decided_by.as_deref(), Some("dashboard:admin"));
    assert_eq!(
        w.store
            .active_revision(FLOW, "prod")
            .await
            .unwrap()
            .map(|r| r.number),
        Some(p.revision)
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_forms_from_another_site_are_refused() {
    // No browser needed: what a cross-site form post looks like on the wire.
    let w = ServerWorld::start(None).await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Log in from the server's own page: a session cookie, HttpOnly and SameSite=Strict.
    let res = c
        .post(format!("{}/login", w.base))
        .header("origin", &w.base)
        .form(&[("token", API_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(API_TOKEN),
        "the cookie never holds the token"
    );
    let session = cookie.split(';').next().unwrap().to_string();

    let pending = w
        .store
        .promotions(None, Some(PromotionState::Pending))
        .await
        .unwrap();
    assert!(pending.is_empty());
    let entry = w
        .store
        .dead_letters(&DlqFilter::default())
        .await
        .unwrap()
        .remove(0);
    let url = format!("{}/dlq/{}/discard", w.base, entry.id);
    for origin in [Some("http://evil.example"), Some("null"), None] {
        let mut req = c
            .post(&url)
            .header("cookie", &session)
            .form(&[("reason", "csrf")]);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let res = req.send().await.unwrap();
        assert_eq!(
            res.status(),
            reqwest::StatusCode::FORBIDDEN,
            "origin {origin:?}"
        );
    }
    assert_eq!(
        w.store.dead_letter(entry.id).await.unwrap().unwrap().state,
        DlqState::Pending
    );
    // From the server's own page it works.
    let res = c
        .post(&url)
        .header("cookie", &session)
        .header("origin", &w.base)
        .form(&[("reason", "not needed")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(
        w.store.dead_letter(entry.id).await.unwrap().unwrap().state,
        DlqState::Discarded
    );
    // "Run now" from the overview starts a run and shows it.
    let res = c
        .post(format!("{}/flows/{FLOW}/run", w.base))
        .header("cookie", &session)
        .header("origin", &w.base)
        .form(&[("env", "dev")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("/runs/") && location.ends_with("?done=started"),
        "{location}"
    );
    let run_id: uuid::Uuid = location["/runs/".len()..location.len() - "?done=started".len()]
        .parse()
        .unwrap();
    assert!(w.store.run(run_id).await.unwrap().is_some());

    // A login form posted from elsewhere is refused too.
    let res = c
        .post(format!("{}/login", w.base))
        .header("origin", "http://evil.example")
        .form(&[("token", API_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::FORBIDDEN);

    // Hostile text from a source or an operator shows escaped, never as markup.
    let other = w
        .store
        .dead_letters(&DlqFilter {
            state: Some(DlqState::Pending),
            ..DlqFilter::default()
        })
        .await
        .unwrap()
        .remove(0);
    let hostile = "<script>alert('x')</script><img src=x onerror=\"alert(1)\">";
    w.store
        .set_dead_letter_edit(other.id, &json!({"note": hostile}), hostile, "tests")
        .await
        .unwrap();
    let res = c
        .get(format!("{}/dlq/{}", w.base, other.id))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = res.text().await.unwrap();
    assert!(
        !html.contains("<script"),
        "no script on the dashboard:\n{html}"
    );
    assert!(!html.contains("<img"), "{html}");
    // Escaped as maud escapes text: `&`, `<`, `>` and `"` (every attribute is double-quoted,
    // so `'` needs none).
    assert!(
        html.contains(
            "&lt;script&gt;alert('x')&lt;/script&gt;&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"
        ),
        "{html}"
    );

    // Logging out ends the session: the cookie no longer opens a page.
    let res = c
        .post(format!("{}/logout", w.base))
        .header("cookie", &session)
        .header("origin", &w.base)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER);
    assert!(
        res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let res = c
        .get(format!("{}/", w.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/login");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_actions_need_their_role_and_follow_four_eyes() {
    // No browser needed: the forms' posts as a browser sends them.
    let w = ServerWorld::start(None).await;
    let viewer = w.token("vera", ferry_store::Role::Viewer).await;
    let approver = w.token("carol", ferry_store::Role::Approver).await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |token: String| {
        let c = c.clone();
        let base = w.base.clone();
        async move {
            let res = c
                .post(format!("{base}/login"))
                .header("origin", &base)
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER);
            res.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string()
        }
    };
    // A promotion carol asks for herself (through the engine, as an approver-role caller
    // cannot promote over the API).
    let report = ferry_engine::lifecycle::promote(
        &w.store,
        &w.project,
        FLOW,
        "dev",
        Some("prod"),
        None,
        &ferry_engine::governance::Actor::cli("carol"),
    )
    .await
    .unwrap();
    let id = report.promotions()[0].id;
    let approve = |session: String| {
        let c = c.clone();
        let base = w.base.clone();
        async move {
            let res = c
                .post(format!("{base}/promotions/{id}/approve"))
                .header("cookie", session)
                .header("origin", &base)
                .send()
                .await
                .unwrap();
            (res.status(), res.text().await.unwrap())
        }
    };

    // The viewer sees the pages, and may not approve: the page says which role is needed.
    let vera = login(viewer).await;
    let res = c
        .get(format!("{}/promotions", w.base))
        .header("cookie", &vera)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let (status, page) = approve(vera.clone()).await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("needs the approver role"), "{page}");
    // carol has the role, but asked for the promotion herself: four eyes.
    let carol = login(approver).await;
    let (status, page) = approve(carol.clone()).await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("four eyes"), "{page}");
    let p = w.store.promotion(id).await.unwrap().unwrap();
    assert_eq!(p.state, PromotionState::Pending);
    // She may withdraw it, though.
    let res = c
        .post(format!("{}/promotions/{id}/reject", w.base))
        .header("cookie", &carol)
        .header("origin", &w.base)
        .form(&[("reason", "asked by mistake")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER);
    let p = w.store.promotion(id).await.unwrap().unwrap();
    assert_eq!(
        (p.state, p.decided_by.as_deref()),
        (PromotionState::Rejected, Some("dashboard:carol"))
    );
    // Both refusals are in the audit log under the session's token name.
    let refused = w
        .store
        .audit(&ferry_store::AuditFilter {
            action: Some("refused".into()),
            ..ferry_store::AuditFilter::default()
        })
        .await
        .unwrap();
    let who: Vec<&str> = refused.iter().map(|e| e.actor.as_str()).collect();
    assert_eq!(who, ["dashboard:carol", "dashboard:vera"], "{refused:?}");
    // A revoked token's session ends.
    ferry_server::tokens::revoke(&w.store, "vera", "tests")
        .await
        .unwrap();
    let res = c
        .get(format!("{}/", w.base))
        .header("cookie", &vera)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/login");
    w.stop().await;
}
