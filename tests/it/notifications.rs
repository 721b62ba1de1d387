//! Notifications: a pipeline's `notifications:` delivered to local HTTP
//! receivers (generic JSON signed with HMAC, Slack-compatible text),
//! retried with backoff, shown on `/admin/notifications`, on both
//! databases.
//!
//! The server runs here with a fast retry schedule (100 ms backoff, three
//! attempts), so it is started by this module rather than `spawn_app`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use scraper::Html;
use sha2::Sha256;
use slipway::domain::{Phase, Role};
use slipway::engine::deploy::notify::{self, Notice, NoticeKind};
use slipway::engine::pipelines;
use slipway::engine::runtime::EngineConfig;
use slipway::storage::testing::{TestDb, test_databases};
use slipway::storage::{self, AuditFilter};

use crate::helpers::{TestApp, browser, csrf_of, member, spawn_app_with_engine, texts, wait_until};

const DEADLINE: Duration = Duration::from_secs(30);
const PASSWORD: &str = "a long test password";

/// A request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A webhook receiver on 127.0.0.1 that records every request and answers
/// `status(n)` to the n-th (from 0).
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start(status: impl Fn(usize) -> u16 + Send + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let record = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.trim_end().split_once(':') {
                        headers.push((name.trim().to_string(), value.trim().to_string()));
                    }
                }
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let n = {
                    let mut got = record.lock().unwrap();
                    got.push(Received {
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    got.len() - 1
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    status(n)
                );
            }
        });
        Receiver { url, got }
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Waits for the n-th request (from 1).
    pub fn nth(&self, n: usize) -> Received {
        wait_until(&format!("request {n} at {}", self.url), DEADLINE, || {
            self.got.lock().unwrap().get(n - 1).cloned()
        })
    }
}

/// Slipway on 127.0.0.1:0 over a fresh database, its engine retrying
/// notifications after 100 ms (doubling), three attempts at most, and an
/// admin `root`.
struct Slipway {
    app: TestApp,
    admin_token: String,
}

impl std::ops::Deref for Slipway {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

fn spawn(backend: String, test_db: TestDb) -> Slipway {
    let mut config = EngineConfig::default();
    config.notifications.backoff = Duration::from_millis(100);
    config.notifications.max_attempts = 3;
    config.notifications.poll = Duration::from_millis(200);
    let app = spawn_app_with_engine(backend, test_db, config);
    let admin_token = member(&app, "root", Role::Admin, &[]);
    Slipway { app, admin_token }
}

fn each_backend(f: impl Fn(&Slipway)) {
    for (label, db) in test_databases() {
        let app = spawn(label, db);
        f(&app);
    }
}

impl Slipway {
    /// Imports a pipeline with these `notifications:` entries.
    fn pipeline(&self, name: &str, notifications: &str) {
        let yaml = format!(
            "pipeline: {name}
source: {{ repo: /srv/git/{name} }}
version: \"1.0.{{build}}\"
stages:
  - name: production
    approvals:
      before: {{ approvers: [\"group:management\"] }}
    tasks: [ {{ shell: ./deploy.sh }} ]
notifications:
{notifications}"
        );
        let definition = pipelines::parse(&yaml, "test.yaml").unwrap();
        let mut conn = self.db.get().unwrap();
        pipelines::import(&mut conn, definition, None, "test", None).unwrap();
    }

    /// Enqueues `notice` as the approvals engine does: inside a write
    /// transaction with the pipeline's current definition.
    fn enqueue(&self, notice: &Notice) {
        let mut conn = self.db.get().unwrap();
        let definition = pipelines::load(&mut conn, &notice.pipeline)
            .unwrap()
            .definition;
        storage::write_transaction(&mut conn, |conn| notify::enqueue(conn, &definition, notice))
            .unwrap();
    }

    /// The admin page as the admin sees it.
    fn admin_page(&self) -> Html {
        let res = self
            .client
            .get(self.url("/admin/notifications"))
            .bearer_auth(&self.admin_token)
            .send()
            .unwrap();
        let status = res.status();
        let body = res.text().unwrap();
        assert_eq!(status, 200, "[{}] {body}", self.backend);
        Html::parse_document(&body)
    }

    /// The cells of the delivery row `id` on the admin page.
    fn row(&self, id: &str) -> Vec<String> {
        texts(&self.admin_page(), &format!("tr#delivery-{id} td"))
    }

    /// Waits until the admin page shows delivery `id` in a state starting with `state`.
    fn wait_for_state(&self, id: &str, state: &str) -> Vec<String> {
        wait_until(&format!("delivery {id} {state}"), DEADLINE, || {
            let row = self.row(id);
            row.get(5).is_some_and(|s| s.contains(state)).then_some(row)
        })
    }
}

fn notice(pipeline: &str, kind: NoticeKind) -> Notice {
    Notice {
        kind,
        pipeline: pipeline.into(),
        release: "1.0.7".into(),
        stage: "production".into(),
        phase: Phase::Before,
        approval_id: 12,
        deployment_id: 40,
        requested_by: "dana".into(),
        approvers: vec!["group:management".into()],
        outcome: None,
        decided_by: None,
        comment: None,
        deadline: chrono::NaiveDate::from_ymd_opt(2026, 12, 3)
            .unwrap()
            .and_hms_opt(9, 30, 0)
            .unwrap(),
        path: "/approvals/12".into(),
    }
}

fn hmac_hex(key: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn notifications_are_delivered_signed_in_generic_and_slack_form() {
    each_backend(|app| {
        let generic = Receiver::start(|_| 200);
        let slack = Receiver::start(|_| 200);
        app.pipeline(
            "shop",
            &format!(
                "  - name: audit-sink
    url: {}
    secret: \"${{{{ secrets.NOTIFY_KEY }}}}\"
  - name: team-chat
    url: {}
    format: slack
    events: [approval_decided]
",
                generic.url, slack.url
            ),
        );
        app.set_secret("shop", "NOTIFY_KEY", "s3cret-key");

        app.enqueue(&notice("shop", NoticeKind::ApprovalRequested));
        let got = generic.nth(1);
        assert_eq!(got.header("content-type"), Some("application/json"));
        assert_eq!(got.header("x-slipway-event"), Some("approval_requested"));
        let delivery = got.header("x-slipway-delivery").unwrap().to_string();
        assert_eq!(
            got.header("x-slipway-signature"),
            Some(format!("sha256={}", hmac_hex("s3cret-key", &got.body)).as_str()),
            "[{}] the signature is the HMAC-SHA256 of the body",
            app.backend
        );
        let body = got.json();
        assert_eq!(body["event"], "approval_requested");
        assert_eq!(body["url"], app.url("/approvals/12"));
        assert_eq!(body["pipeline"], "shop");
        assert_eq!(body["release"], "1.0.7");
        assert_eq!(body["approvers"][0], "group:management");
        assert_eq!(body["deadline"], "2026-12-03T09:30:00Z");

        // The chat only wants decisions; a decision goes to both.
        let mut decided = notice("shop", NoticeKind::ApprovalDecided);
        decided.outcome = Some("approved".into());
        decided.decided_by = Some("mara".into());
        app.enqueue(&decided);
        let chat = slack.nth(1);
        assert_eq!(chat.header("x-slipway-event"), Some("approval_decided"));
        assert_eq!(chat.header("x-slipway-signature"), None);
        let text = chat.json()["text"].as_str().unwrap().to_string();
        assert!(
            text.starts_with("Approval approved by mara: shop 1.0.7 to production"),
            "{text}"
        );
        assert!(
            text.contains(&format!("<{}|", app.url("/approvals/12"))),
            "{text}"
        );
        assert_eq!(generic.nth(2).json()["outcome"], "approved");
        assert_eq!(slack.count(), 1, "the chat got no request notice");

        // The admin page lists them, newest first; viewers may not see it.
        let row = app.wait_for_state(&delivery, "delivered");
        assert!(row[2].contains("shop"), "{row:?}");
        assert_eq!(row[3], "approval requested");
        assert!(row[4].contains("audit-sink") && row[4].contains(&generic.url));
        assert_eq!(row[6], "1");
        assert_eq!(row[7], "HTTP 200");
        let page = app.admin_page();
        let targets = texts(&page, "td.target .name");
        assert_eq!(targets, ["team-chat", "audit-sink", "audit-sink"]);
        let res = app
            .client
            .get(app.url("/admin/notifications"))
            .bearer_auth(&app.viewer_token)
            .send()
            .unwrap();
        assert_eq!(res.status(), 403, "[{}] viewer", app.backend);
    });
}

#[test]
fn failed_attempts_are_retried_with_backoff_then_fail_and_can_be_retried() {
    each_backend(|app| {
        // 500 twice, then 200.
        let flaky = Receiver::start(|n| if n < 2 { 500 } else { 200 });
        // 500 for the three attempts, then 200 (after "retry now").
        let down = Receiver::start(|n| if n < 3 { 500 } else { 200 });
        app.pipeline(
            "shop",
            &format!(
                "  - {{ name: flaky, url: \"{}\" }}\n  - {{ name: down, url: \"{}\" }}\n",
                flaky.url, down.url
            ),
        );
        app.enqueue(&notice("shop", NoticeKind::ApprovalExpiring));

        let third = flaky.nth(3);
        let flaky_id = third.header("x-slipway-delivery").unwrap().to_string();
        assert_eq!(
            flaky.nth(1).header("x-slipway-delivery"),
            Some(flaky_id.as_str()),
            "the same delivery"
        );
        assert_eq!(flaky.nth(1).body, third.body, "the same body every attempt");
        let row = app.wait_for_state(&flaky_id, "delivered");
        assert_eq!(row[6], "3", "[{}] attempts: {row:?}", app.backend);
        assert_eq!(row[7], "HTTP 200");

        let down_id = down
            .nth(1)
            .header("x-slipway-delivery")
            .unwrap()
            .to_string();
        let row = app.wait_for_state(&down_id, "failed");
        assert_eq!(row[6], "3", "[{}] attempts: {row:?}", app.backend);
        assert!(row[7].contains("HTTP 500"), "{row:?}");
        assert_eq!(down.count(), 3);
        {
            let mut conn = app.db.get().unwrap();
            let failed = storage::search_audit(
                &mut conn,
                &AuditFilter {
                    action_prefix: Some("notification.failed".into()),
                    ..AuditFilter::default()
                },
                None,
                10,
            )
            .unwrap();
            assert_eq!(failed.len(), 1, "{failed:?}");
            assert_eq!(failed[0].subject, "notification:shop/down");
        }

        // An admin retries it now, signed in (CSRF).
        let session = browser();
        let login = session
            .get(app.url("/login"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let csrf = csrf_of(&Html::parse_document(&login));
        let res = session
            .post(app.url("/login"))
            .form(&[
                ("username", "root"),
                ("password", PASSWORD),
                ("csrf", csrf.as_str()),
                ("next", "/admin/notifications"),
            ])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        let page = Html::parse_document(
            &session
                .get(app.url("/admin/notifications"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
        let retry = format!("/admin/notifications/{down_id}/retry");
        let forms = crate::helpers::attrs(&page, "table.notifications form", "action");
        assert_eq!(forms, [retry.as_str()], "only the failed one has Retry now");
        let res = session
            .post(app.url(&retry))
            .form(&[("csrf", "wrong")])
            .send()
            .unwrap();
        assert_eq!(res.status(), 403, "without the CSRF token");
        let csrf = csrf_of(&page);
        let res = session
            .post(app.url(&retry))
            .form(&[("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        down.nth(4);
        let row = app.wait_for_state(&down_id, "delivered");
        assert_eq!(row[6], "4", "{row:?}");
        // A delivered one cannot be retried.
        let res = session
            .post(app.url(&retry))
            .form(&[("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 409);
        let mut conn = app.db.get().unwrap();
        let retried = storage::search_audit(
            &mut conn,
            &AuditFilter {
                action_prefix: Some("notification.retry".into()),
                ..AuditFilter::default()
            },
            None,
            10,
        )
        .unwrap();
        assert_eq!(retried.len(), 1);
        assert_eq!(retried[0].actor, "root");
    });
}

#[test]
fn a_missing_secret_is_reported_on_the_admin_page() {
    each_backend(|app| {
        let receiver = Receiver::start(|_| 200);
        app.pipeline(
            "shop",
            &format!(
                "  - {{ name: signed, url: \"{}\", secret: \"${{{{ secrets.NOT_SET }}}}\" }}\n",
                receiver.url
            ),
        );
        app.enqueue(&notice("shop", NoticeKind::ApprovalRequested));
        let row = wait_until("the failed delivery", DEADLINE, || {
            let page = app.admin_page();
            let cells = texts(&page, "tbody tr td");
            cells
                .get(5)
                .is_some_and(|s| s.contains("failed"))
                .then_some(cells)
        });
        assert!(
            row[7].contains("the secret `NOT_SET` of pipeline `shop` is not set"),
            "{row:?}"
        );
        assert_eq!(receiver.count(), 0, "nothing unsigned was sent");
    });
}
