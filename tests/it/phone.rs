//! Every main page in a real headless Chromium: nothing scrolls sideways at
//! a phone's width (390 × 844), and axe-core finds no serious or critical
//! accessibility violation. The app is seeded like the demo: a pipeline with
//! releases in every stage, a deployment waiting for approval, a gate being
//! evaluated, slots serving releases, a failed build.
//!
//! `SLIPWAY_SCREENSHOTS=DIR` also saves each page at 390 px and 1280 px
//! wide (whole page) into DIR, to look at.

use std::time::Duration;

use serde_json::{Value, json};
use slipway::domain::{BuildState, DeploymentState, Role};
use slipway::engine::users;
use slipway::storage::{self, slots as slot_store};

use crate::helpers::{
    SPEC_PIPELINE, TestApp, attrs, each_backend, post_json, seed_releases, texts,
};
use crate::idp::{Browser, available, browser_check};

const PIPELINE: &str = "space-game-web";
const PASSWORD: &str = "mara's long password";

/// A second pipeline whose only stage is gated; its gate waits ten minutes
/// before the first sample, so it stays "evaluating" through the test.
const GATED: &str = r#"pipeline: kite
source: { repo: /srv/git/kite, branch: main }
version: "2.0.{build}"
build:
  tasks: [ { shell: "./build.sh" } ]
stages:
  - name: prod
    trigger: { schedule: { cron: "0 30 2 * * MON-FRI", timezone: "America/Los_Angeles" } }
    gates:
      before:
        delay: 10m
        interval: 1m
        steady: 5m
        timeout: 1h
        checks:
          - name: health
            http: { url: "http://127.0.0.1:9/health", success: "status == 200" }
    tasks: [ { shell: "echo deployed" } ]
"#;

/// Seeds the app; returns the paths of its main pages (signed-in ones).
fn seed(app: &TestApp) -> Vec<String> {
    let b = &app.backend;
    assert_eq!(app.import(SPEC_PIPELINE).status(), 201, "[{b}] import");
    assert_eq!(app.import(GATED).status(), 201, "[{b}] import kite");
    {
        let mut conn = app.conn();
        let groups = ["qa".to_string(), "management".to_string()];
        users::create_user(
            &mut conn,
            users::NewLocalUser {
                username: "mara",
                role: Role::Admin,
                groups: &groups,
                password: PASSWORD,
            },
            "test",
        )
        .expect("mara");
    }
    use DeploymentState::*;
    seed_releases(
        app,
        PIPELINE,
        4,
        |n| {
            if n == 3 {
                "feature/a-rather-long-branch-name-for-the-board".into()
            } else {
                "main".into()
            }
        },
        |n| match n {
            1 => vec![
                ("dev", Succeeded),
                ("test", Succeeded),
                ("preprod", Succeeded),
                ("production", Succeeded),
            ],
            2 => vec![
                ("dev", Succeeded),
                ("test", Succeeded),
                ("preprod", Rejected),
            ],
            3 => vec![("dev", Succeeded), ("test", Succeeded)],
            _ => vec![("dev", Failed)],
        },
    );
    seed_releases(app, "kite", 1, |_| "main".into(), |_| vec![]);
    // Slots serving releases, and a failed build.
    {
        let mut conn = app.conn();
        let p = storage::find_pipeline(&mut conn, PIPELINE)
            .unwrap()
            .unwrap();
        let listing = slot_store::list_all_slots(&mut conn).unwrap();
        for (slot, version) in [("dev", "1.0.4"), ("test", "1.0.2"), ("production", "1.0.1")] {
            let release = storage::find_release(&mut conn, p.id, version)
                .unwrap()
                .unwrap();
            let row = &listing.iter().find(|l| l.slot.name == slot).unwrap().slot;
            let mut content = slot_store::SlotContent::of(row);
            content.release_id = Some(release.id);
            content.since = Some(chrono::Utc::now().naive_utc());
            slot_store::record_slot_deploy(
                &mut conn,
                row.id,
                &content,
                "test",
                &format!("slot:space-game/{slot}"),
                version,
            )
            .unwrap();
        }
        storage::insert_build(
            &mut conn,
            &storage::NewBuild {
                pipeline_id: p.id,
                state: BuildState::Failed,
                branch: Some("main".into()),
                commit_sha: Some(format!("{:040x}", 99)),
                message: Some("a change that does not build".into()),
                author: Some("Mara <mara@tailspin.example>".into()),
                requested_by: "mara".into(),
                trigger: "webhook:github".into(),
            },
        )
        .unwrap();
    }
    // A deployment waiting for mara's approval (requested by someone else),
    // and one whose gate is being evaluated.
    let manager = app.token("deployer", Role::ReleaseManager);
    let (status, v) = post_json(
        app,
        &manager,
        &format!("/api/v1/pipelines/{PIPELINE}/stages/preprod/deployments"),
        &json!({ "release": "1.0.3" }),
    );
    assert_eq!(status, 202, "[{b}] {v}");
    let waiting = v["id"].as_i64().unwrap();
    let (status, v) = post_json(
        app,
        &manager,
        "/api/v1/pipelines/kite/stages/prod/deployments",
        &json!({ "release": "1.0.1" }),
    );
    assert_eq!(status, 202, "[{b}] {v}");
    let gated = v["id"].as_i64().unwrap();

    let approval = wait_for(
        app,
        &manager,
        &format!("/api/v1/deployments/{waiting}"),
        |d| d["approvals"][0]["id"].as_i64(),
    );
    let gate = wait_for(app, &manager, "/api/v1/gates", |g| {
        g["evaluating"]
            .as_array()?
            .iter()
            .find(|r| r["deployment_id"] == gated)?["id"]
            .as_i64()
    });
    let first_deployment = attrs(
        &app.page(&format!("/pipelines/{PIPELINE}/releases/1.0.1")),
        "a[href*='/deployments/']",
        "href",
    )
    .into_iter()
    .next()
    .expect("a deployment link");
    vec![
        "/".into(),
        format!("/pipelines/{PIPELINE}"),
        format!("/pipelines/{PIPELINE}/releases"),
        format!("/pipelines/{PIPELINE}/releases/1.0.3"),
        first_deployment,
        format!("/pipelines/{PIPELINE}/releases/1.0.3/deployments/{waiting}"),
        format!("/pipelines/kite/releases/1.0.1/deployments/{gated}"),
        format!("/pipelines/{PIPELINE}/stages/production"),
        format!("/pipelines/{PIPELINE}/stages/test"),
        format!("/pipelines/{PIPELINE}/stages/test/configure"),
        "/pipelines/kite".into(),
        format!("/pipelines/{PIPELINE}/builds"),
        format!("/pipelines/{PIPELINE}/builds/1"),
        "/approvals".into(),
        format!("/approvals/{approval}"),
        "/gates".into(),
        format!("/gates/{gate}"),
        "/environments".into(),
        "/environments/space-game/swap?from=dev&to=production".into(),
        "/audit".into(),
        "/settings/tokens".into(),
        "/admin/users".into(),
        "/admin/notifications".into(),
        "/pipelines/no-such-pipeline".into(),
    ]
}

/// Polls `path` (JSON, as the holder of `token`) until `f` finds something.
fn wait_for<T>(app: &TestApp, token: &str, path: &str, f: impl Fn(&Value) -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        let (_, v) = crate::helpers::get_json(app, token, path);
        if let Some(found) = f(&v) {
            return found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "[{}] nothing found at {path}: {v}",
            app.backend
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `check(browser, path)` on every main page of a seeded app, on each
/// backend: `/login` signed out, then the rest signed in as an admin. Fails
/// with every problem `check` reports, page by page.
fn every_page(check: impl Fn(&Browser, &TestApp, &str) -> Option<String>) {
    if !available("a headless Chromium", browser_check()) {
        return;
    }
    let browser = Browser::start();
    let problems = std::cell::RefCell::new(Vec::new());
    let check = |browser: &Browser, app: &TestApp, path: &str| {
        if let Some(p) = check(browser, app, path) {
            problems.borrow_mut().push(p);
        }
    };
    each_backend(|app| {
        let pages = seed(app);
        set_width(&browser, 390, 844);
        browser.goto(&app.url("/login"));
        browser.wait_for("main h1");
        check(&browser, app, "/login");
        browser.fill("input#username", "mara");
        browser.fill("input#password", PASSWORD);
        browser.click("form.login button[type=submit], main button[type=submit]");
        browser.wait_for("header .who");
        for path in &pages {
            browser.goto(&app.url(path));
            browser.wait_for("main h1");
            check(&browser, app, path);
        }
        // Sign out, for the next backend's sign-in.
        browser.goto(&app.url("/"));
        browser.click("header button.link");
        browser.wait_for_url("signed out", |u| {
            !u.path().starts_with("/pipelines") && !u.path().starts_with("/admin")
        });
    });
    let problems = problems.into_inner();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

fn set_width(browser: &Browser, width: u32, height: u32) {
    browser
        .rt
        .block_on(browser.client.set_window_size(width, height))
        .expect("window size");
}

fn script(browser: &Browser, js: &str) -> Value {
    browser
        .rt
        .block_on(browser.client.execute(js, vec![]))
        .expect("script")
}

/// Saves the page at 390 px and 1280 px wide into `$SLIPWAY_SCREENSHOTS`.
fn screenshots(browser: &Browser, backend: &str, path: &str) {
    let Some(dir) = std::env::var_os("SLIPWAY_SCREENSHOTS") else {
        return;
    };
    if !backend.starts_with("sqlite") {
        return;
    }
    let name: String = path
        .trim_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let name = if name.is_empty() {
        "board".into()
    } else {
        name
    };
    for width in [390, 1280] {
        set_width(browser, width, 844);
        let height = script(browser, "return document.documentElement.scrollHeight;")
            .as_u64()
            .unwrap_or(844)
            .clamp(400, 8000) as u32;
        set_width(browser, width, height);
        let png = browser
            .rt
            .block_on(browser.client.screenshot())
            .expect("screenshot");
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{name}-{width}.png")),
            png,
        )
        .expect("write the screenshot");
    }
    set_width(browser, 390, 844);
}

/// The page's width beyond the viewport, and the outermost elements that
/// stick out on the right.
const OVERFLOW: &str = r#"
const root = document.documentElement;
const limit = root.clientWidth;
const out = [];
for (const el of document.body.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.right <= limit + 0.5) continue;
  let p = el.parentElement, inner = false;
  while (p && p !== document.body) {
    const pr = p.getBoundingClientRect();
    if (pr.right > limit + 0.5) { inner = true; break; }
    p = p.parentElement;
  }
  if (inner) continue;
  const id = el.id ? '#' + el.id : '';
  const cls = el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\s+/).join('.') : '';
  out.push(el.tagName.toLowerCase() + id + cls + ' right=' + Math.round(r.right) + ' "' + (el.textContent || '').trim().slice(0, 60) + '"');
}
return { scroll: root.scrollWidth, client: limit, inner: window.innerWidth, out: out.slice(0, 15) };
"#;

#[test]
fn no_main_page_scrolls_sideways_at_phone_width() {
    every_page(|browser, app, path| {
        let b = &app.backend;
        let v = script(browser, OVERFLOW);
        let inner = v["inner"].as_u64().unwrap();
        assert!(
            inner <= 400,
            "[{b}] the window is {inner} px wide, not a phone's"
        );
        let (scroll, client) = (v["scroll"].as_u64().unwrap(), v["client"].as_u64().unwrap());
        screenshots(browser, b, path);
        (scroll > client).then(|| format!(
            "[{b}] {path} scrolls sideways at {inner} px: {scroll} px wide in {client} px; sticking out:\n{}",
            v["out"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| format!("  {}", s.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("\n")
        ))
    });
}

fn axe_source() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/idp/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}); run `npm ci --prefix tests/idp`",
            path.display()
        )
    })
}

#[test]
fn axe_finds_no_serious_or_critical_violation_on_any_main_page() {
    let axe = axe_source();
    every_page(|browser, app, path| {
        let b = &app.backend;
        let mut found = Vec::new();
        for width in [1280, 390] {
            set_width(browser, width, 844);
            // WebDriver's scripts are not subject to the page's CSP.
            script(browser, &format!("{axe}\n;return typeof axe;"));
            let result = browser
                .rt
                .block_on(browser.client.execute_async(
                    r#"const done = arguments[arguments.length - 1];
                       axe.run(document).then(r => done(r.violations
                         .filter(v => v.impact === 'serious' || v.impact === 'critical')
                         .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                                      nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' — ' + n.failureSummary) }))),
                         e => done('axe failed: ' + e));"#,
                    vec![],
                ))
                .expect("axe.run");
            let violations = result.as_array().unwrap_or_else(|| panic!("{result}"));
            if !violations.is_empty() {
                found.push(format!(
                    "[{b}] {path} at {width} px: {}",
                    serde_json::to_string_pretty(violations).unwrap()
                ));
            }
        }
        set_width(browser, 390, 844);
        (!found.is_empty()).then(|| found.join("\n"))
    });
}

/// What the header shows: every link and button, with the page it marks
/// as current (`*`).
fn header_of(html: &scraper::Html) -> Vec<String> {
    let sel = scraper::Selector::parse("header a, header button").unwrap();
    html.select(&sel)
        .map(|e| {
            let text = e.text().collect::<String>();
            let current = e.value().attr("aria-current").map_or("", |_| "*");
            format!(
                "{}{current}",
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect()
}

fn without_marks(header: &[String]) -> Vec<String> {
    header
        .iter()
        .map(|h| h.trim_end_matches('*').to_string())
        .collect()
}

#[test]
fn the_header_is_the_same_after_a_form_post_and_marks_the_current_page() {
    each_backend(|app| {
        let b = &app.backend;
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201, "[{b}]");
        use DeploymentState::*;
        seed_releases(
            app,
            PIPELINE,
            1,
            |_| "main".into(),
            |_| vec![("dev", Succeeded), ("test", Succeeded)],
        );
        {
            let mut conn = app.conn();
            let groups = ["qa".to_string()];
            users::create_user(
                &mut conn,
                users::NewLocalUser {
                    username: "mara",
                    role: Role::Admin,
                    groups: &groups,
                    password: PASSWORD,
                },
                "test",
            )
            .unwrap();
        }
        let deployer = app.token("deployer", Role::ReleaseManager);
        let (status, v) = post_json(
            app,
            &deployer,
            &format!("/api/v1/pipelines/{PIPELINE}/stages/preprod/deployments"),
            &json!({ "release": "1.0.1" }),
        );
        assert_eq!(status, 202, "[{b}] {v}");
        let id = v["id"].as_i64().unwrap();
        wait_for(app, &deployer, &format!("/api/v1/deployments/{id}"), |d| {
            d["approvals"][0]["id"].as_i64()
        });
        let client = crate::helpers::browser();
        assert_eq!(app.sign_in(&client, "mara", PASSWORD, "/").status(), 303);
        let page = |res: reqwest::blocking::Response, status: u16| {
            assert_eq!(res.status(), status, "[{b}] {}", res.url());
            scraper::Html::parse_document(&res.text().unwrap())
        };

        // A stage page: under the release board, which the header marks.
        let path = format!("/pipelines/{PIPELINE}/stages/test/configure");
        let html = page(client.get(app.url(&path)).send().unwrap(), 200);
        let header = header_of(&html);
        assert!(
            header.contains(&"Release board*".to_string()),
            "[{b}] {header:?}"
        );
        assert!(
            header.contains(&"Approvals (1)".to_string()),
            "[{b}] {header:?}"
        );
        assert_eq!(
            attrs(&html, "header a[aria-current]", "aria-current"),
            ["true"],
            "[{b}] a stage is under the board, not the board itself"
        );

        // The stage form posted with an error, and previewed: the same header.
        let fields = crate::stage_form::form_fields(&html, &[("cron", Some("0 0 25 * * *"))]);
        let answered = page(
            client.post(app.url(&path)).form(&fields).send().unwrap(),
            422,
        );
        assert!(!texts(&answered, "#cron-error").is_empty(), "[{b}]");
        assert_eq!(
            header_of(&answered),
            header,
            "[{b}] after a save with errors"
        );
        let fields = crate::stage_form::form_fields(&html, &[("action", Some("preview"))]);
        let previewed = page(
            client.post(app.url(&path)).form(&fields).send().unwrap(),
            200,
        );
        assert_eq!(header_of(&previewed), header, "[{b}] after a preview");

        // An error page is signed in too, with the same links.
        let missing = page(client.get(app.url("/pipelines/nope")).send().unwrap(), 404);
        assert_eq!(
            without_marks(&header_of(&missing)),
            without_marks(&header),
            "[{b}] a 404 page"
        );
        let csrf = crate::helpers::csrf_of(&html);
        let refused = page(
            client
                .post(app.url("/pipelines/nope/builds"))
                .form(&[("csrf", csrf.as_str())])
                .send()
                .unwrap(),
            404,
        );
        assert_eq!(
            without_marks(&header_of(&refused)),
            without_marks(&header),
            "[{b}] an error answering a form"
        );

        // Each section marks itself, and only itself, as the current page.
        for (path, link) in [
            ("/", "Release board"),
            ("/environments", "Environments"),
            ("/gates", "Gates"),
            ("/approvals", "Approvals (1)"),
            ("/audit", "Audit log"),
            ("/admin/users", "Users"),
            ("/settings/tokens", "API tokens"),
        ] {
            let html = page(client.get(app.url(path)).send().unwrap(), 200);
            let marked: Vec<String> = header_of(&html)
                .into_iter()
                .filter(|h| h.ends_with('*'))
                .collect();
            assert_eq!(marked, [format!("{link}*")], "[{b}] {path}");
            assert_eq!(
                attrs(&html, "header a[aria-current]", "aria-current"),
                ["page"],
                "[{b}] {path}"
            );
        }
    });
}

#[test]
fn the_stage_form_preview_shows_its_result_in_view() {
    if !available("a headless Chromium", browser_check()) {
        return;
    }
    let browser = Browser::start();
    each_backend(|app| {
        let b = &app.backend;
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201, "[{b}]");
        app.user("mara", Role::ReleaseManager, PASSWORD);
        set_width(&browser, 390, 844);
        browser.goto(&app.url("/login?next=/pipelines/space-game-web/stages/test/configure"));
        browser.fill("input#username", "mara");
        browser.fill("input#password", PASSWORD);
        browser.click("main button[type=submit]");
        browser.wait_for("#stage-form");
        browser.click("button[value=preview]");
        browser.wait_for("section#preview");
        let v = script(
            &browser,
            r#"const r = document.getElementById('preview').getBoundingClientRect();
               return { top: r.top, bottom: r.bottom, height: window.innerHeight,
                        focused: document.activeElement ? document.activeElement.id : '',
                        hash: location.hash, times: document.querySelectorAll('#preview li').length };"#,
        );
        assert_eq!(v["hash"], "#preview", "[{b}] {v}");
        assert_eq!(v["times"], 5, "[{b}] {v}");
        let (top, height) = (v["top"].as_f64().unwrap(), v["height"].as_f64().unwrap());
        assert!(
            (-2.0..height - 40.0).contains(&top),
            "[{b}] the preview is not in view after posting: {v}"
        );
        assert_eq!(v["focused"], "preview", "[{b}] {v}");
        browser.goto(&app.url("/"));
        browser.click("header button.link");
        browser.wait_for("header .who a");
    });
}

/// Every text of the drawing that does not fit: a box's lines beyond its
/// box, an arrow's words beyond the gap between two boxes.
const CLIPPED: &str = r#"
const out = [];
for (const g of document.querySelectorAll('svg.drawing g.node')) {
  const r = g.querySelector('rect').getBBox();
  for (const t of g.querySelectorAll('text')) {
    const b = t.getBBox();
    if (b.x < r.x + 2 || b.x + b.width > r.x + r.width - 2) out.push('box: ' + t.textContent + ' (' + Math.round(b.x + b.width) + ' > ' + Math.round(r.x + r.width) + ')');
  }
}
for (const g of document.querySelectorAll('svg.drawing g.edge')) {
  const l = g.querySelector('line');
  const x1 = l.x1.baseVal.value, x2 = l.x2.baseVal.value + 6;
  for (const t of g.querySelectorAll('text')) {
    const b = t.getBBox();
    if (b.x < x1 + 2 || b.x + b.width > x2 - 2) out.push('arrow: ' + t.textContent + ' (' + Math.round(b.x) + '..' + Math.round(b.x + b.width) + ' in ' + x1 + '..' + x2 + ')');
  }
}
const svg = document.querySelector('svg.drawing').getBBox();
const legend = document.querySelector('svg.drawing .legend').getBBox();
if (legend.width + 16 > document.querySelector('svg.drawing').viewBox.baseVal.width) out.push('legend');
return out;
"#;

#[test]
fn the_drawing_shows_what_is_live_in_each_stage_and_no_label_is_clipped() {
    if !available("a headless Chromium", browser_check()) {
        return;
    }
    let browser = Browser::start();
    each_backend(|app| {
        let b = &app.backend;
        seed(app);
        let html = app.page(&format!("/pipelines/{PIPELINE}"));
        let lines = |class: &str| texts(&html, &format!("svg.drawing g.node .{class}"));
        assert_eq!(
            lines("node-live"),
            [
                "live: 1.0.4",
                "live: 1.0.2",
                "nothing live yet",
                "live: 1.0.1"
            ],
            "[{b}] what each slot serves"
        );
        let states = lines("node-state");
        assert_eq!(
            states,
            [
                "✖ 1.0.4: Failed",
                "✔ 1.0.3: Succeeded",
                "⚑ 1.0.3: Waiting for approval",
                "✔ 1.0.1: Succeeded"
            ],
            "[{b}] the newest deployment of each stage"
        );
        let others = lines("node-line");
        assert!(
            others.contains(&"⚑ approval before: group:management".to_string()),
            "[{b}] who signs off: {others:?}"
        );
        assert!(
            others.contains(&"◐ gate before (1 check)".to_string()),
            "[{b}] {others:?}"
        );
        let desc = texts(&html, "svg.drawing desc").join("");
        assert!(desc.contains("production (continuous"), "[{b}] {desc}");
        assert!(desc.contains("live: 1.0.1"), "[{b}] {desc}");
        // A link per stage box, nothing focusable inside another.
        assert_eq!(attrs(&html, "svg.drawing a", "href").len(), 4, "[{b}]");
        assert!(attrs(&html, "svg.drawing a a", "href").is_empty(), "[{b}]");

        // In Chromium: nothing is clipped, with a long cron label too.
        app.user("mara-viewer", Role::Viewer, PASSWORD);
        set_width(&browser, 1280, 844);
        browser.goto(&app.url("/login"));
        browser.fill("input#username", "mara-viewer");
        browser.fill("input#password", PASSWORD);
        browser.click("main button[type=submit]");
        browser.wait_for("header .who");
        for path in [format!("/pipelines/{PIPELINE}"), "/pipelines/kite".into()] {
            browser.goto(&app.url(&path));
            browser.wait_for("svg.drawing");
            let clipped = script(&browser, CLIPPED);
            assert_eq!(clipped, json!([]), "[{b}] {path}: clipped labels");
        }
        let labels = texts(&app.page("/pipelines/kite"), "svg.drawing .edge-label");
        assert_eq!(labels, ["cron 0 30 2 * * MON-FRI"], "[{b}]");
        browser.click("header button.link");
        browser.wait_for("header .who a");
    });
}
