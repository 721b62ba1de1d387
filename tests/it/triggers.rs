//! Scheduled triggers and the stage page: the schedule API across the 2027
//! DST changes, a schedule firing every two seconds, catch-up after a
//! downtime, editing a stage through the form, the board explaining its
//! cells, and two real `slipway serve` processes on one PostgreSQL database
//! firing one schedule exactly once per instant.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use scraper::Html;
use serde_json::Value;
use slipway::domain::{DeploymentState, Role, TriggerOutcome};
use slipway::engine::{Engine, EngineConfig, pipelines};
use slipway::storage::schedules::{self as store, TriggerRunRow};
use slipway::storage::testing::{TestDb, test_databases};
use slipway::storage::{self, Db, DbConn, DeploymentRow, NewArtifact, NewDeployment, NewRelease};

use crate::builds::{json, wait_until};
use crate::helpers::{SPEC_PIPELINE, TestApp, attrs, browser, each_backend, texts};

/// dev (manual) then test on a schedule; `extra` is appended to the test stage.
fn scheduled_pipeline(name: &str, cron: &str, zone: &str, extra: &str) -> String {
    format!(
        r#"pipeline: {name}
source: {{ repo: /srv/git/{name}, branch: main }}
version: "1.0.{{build}}"
stages:
  - name: dev
    trigger: manual
  - name: test
    trigger: {{ schedule: {{ cron: "{cron}", timezone: "{zone}" }} }}
{extra}"#
    )
}

fn import_on(conn: &mut DbConn, yaml: &str) {
    let def = pipelines::parse(yaml, "test").unwrap();
    pipelines::import(conn, def, None, "test", None).unwrap();
}

/// A release of `pipeline` with deployments in these states (inserted as
/// they are, no engine involved).
fn add_release(
    conn: &mut DbConn,
    pipeline: &str,
    version: &str,
    states: &[(&str, DeploymentState)],
) -> i64 {
    let p = storage::find_pipeline(conn, pipeline).unwrap().unwrap();
    let revision = storage::current_revision(conn, p.id).unwrap();
    let n = storage::list_releases(
        conn,
        p.id,
        &storage::ReleaseFilter {
            limit: 10_000,
            ..Default::default()
        },
    )
    .unwrap()
    .len()
        + 1;
    let release = storage::insert_release(
        conn,
        &NewRelease {
            pipeline_id: p.id,
            version: version.into(),
            build_id: None,
            revision_id: revision.id,
            commit_sha: format!("{n:040x}"),
            branch: "main".into(),
            message: format!("change {version}"),
            author: "Mara <mara@example.com>".into(),
            fixes_release_id: None,
        },
        &[NewArtifact {
            path: "dist/app.js".into(),
            sha256: format!("{n:064x}"),
            size: 10,
        }],
    )
    .unwrap();
    for (stage, state) in states {
        storage::insert_deployment(
            conn,
            &NewDeployment {
                pipeline_id: p.id,
                release_id: release.id,
                stage: (*stage).into(),
                state: *state,
                trigger: "manual".into(),
                requested_by: "mara".into(),
                reason: None,
            },
        )
        .unwrap();
    }
    release.id
}

fn pipeline_id(conn: &mut DbConn, name: &str) -> i64 {
    storage::find_pipeline(conn, name).unwrap().unwrap().id
}

fn runs(conn: &mut DbConn, pipeline: &str, stage: &str) -> Vec<TriggerRunRow> {
    let id = pipeline_id(conn, pipeline);
    store::trigger_runs_of_stage(conn, id, stage).unwrap()
}

/// Every deployment of a stage, oldest first.
fn deployments_in(conn: &mut DbConn, pipeline: &str, stage: &str) -> Vec<DeploymentRow> {
    use slipway::storage::schema::deployments as d;
    let id = pipeline_id(conn, pipeline);
    d::table
        .filter(d::pipeline_id.eq(id))
        .filter(d::stage.eq(stage))
        .order(d::id.asc())
        .select(DeploymentRow::as_select())
        .load(conn)
        .unwrap()
}

fn version_of(conn: &mut DbConn, release_id: i64) -> String {
    storage::find_release_by_id(conn, release_id)
        .unwrap()
        .unwrap()
        .version
}

fn schedule(app: &TestApp, path: &str) -> (u16, Value) {
    json(app.get(path))
}

fn times(v: &Value) -> Vec<String> {
    v["fire_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_schedule_api_lists_fire_times_across_the_2027_dst_changes() {
    each_backend(|app| {
        let yaml = scheduled_pipeline("berlin", "0 30 2 * * *", "Europe/Berlin", "");
        assert_eq!(app.import(&yaml).status(), 201);
        let yaml = scheduled_pipeline("la", "0 30 2 * * *", "America/Los_Angeles", "");
        assert_eq!(app.import(&yaml).status(), 201);
        let yaml = scheduled_pipeline("la-early", "0 30 1 * * *", "America/Los_Angeles", "");
        assert_eq!(app.import(&yaml).status(), 201);

        // Berlin, 28 March 2027: 02:30 does not exist; it fires at 03:00 CEST.
        let (status, v) = schedule(
            app,
            "/api/v1/pipelines/berlin/stages/test/schedule?count=3&from=2027-03-27T00:00:00Z",
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["stage"], "test");
        assert_eq!(v["cron"], "0 30 2 * * *");
        assert_eq!(v["timezone"], "Europe/Berlin");
        assert_eq!(v["catch_up"], false);
        assert!(v["recent_runs"].as_array().unwrap().is_empty(), "{v}");
        assert!(v.get("last_fired_at").is_some(), "{v}");
        assert_eq!(
            times(&v),
            [
                "2027-03-27T01:30:00Z",
                "2027-03-28T01:00:00Z",
                "2027-03-29T00:30:00Z"
            ]
        );
        assert_eq!(v["fire_times_local"][1], "2027-03-28T03:00:00+02:00");
        // 31 October 2027: 02:30 happens twice; it fires once, at the first.
        let (_, v) = schedule(
            app,
            "/api/v1/pipelines/berlin/stages/test/schedule?count=2&from=2027-10-30T12:00:00Z",
        );
        assert_eq!(times(&v), ["2027-10-31T00:30:00Z", "2027-11-01T01:30:00Z"]);

        // Los Angeles, 14 March 2027: 02:30 PST does not exist → 03:00 PDT.
        let (_, v) = schedule(
            app,
            "/api/v1/pipelines/la/stages/test/schedule?count=3&from=2027-03-13T00:00:00Z",
        );
        assert_eq!(
            times(&v),
            [
                "2027-03-13T10:30:00Z",
                "2027-03-14T10:00:00Z",
                "2027-03-15T09:30:00Z"
            ]
        );
        // 7 November 2027: 01:30 happens twice (PDT, then PST): one fire.
        let (_, v) = schedule(
            app,
            "/api/v1/pipelines/la-early/stages/test/schedule?count=2&from=2027-11-06T12:00:00Z",
        );
        assert_eq!(times(&v), ["2027-11-07T08:30:00Z", "2027-11-08T09:30:00Z"]);

        // Defaults: five fire times from now, all in the future, in order.
        let (status, v) = schedule(app, "/api/v1/pipelines/la/stages/test/schedule");
        assert_eq!(status, 200, "{v}");
        let fires = times(&v);
        assert_eq!(fires.len(), 5);
        let parsed: Vec<DateTime<Utc>> = fires.iter().map(|t| t.parse().unwrap()).collect();
        assert!(parsed[0] > Utc::now() && parsed.windows(2).all(|w| w[0] < w[1]));

        // Bad input is a 4xx with a message, never a 500.
        for (path, want, words) in [
            ("la/stages/test/schedule?count=0", 400, "count"),
            ("la/stages/test/schedule?count=101", 400, "count"),
            ("la/stages/test/schedule?count=lots", 400, "count"),
            ("la/stages/test/schedule?from=tomorrow", 400, "RFC 3339"),
            ("la/stages/test/schedule?from=2027-03-27", 400, "RFC 3339"),
            ("nope/stages/test/schedule", 404, "nope"),
            ("la/stages/nope/schedule", 404, "nope"),
            ("la/stages/dev/schedule", 422, "no schedule"),
        ] {
            let (status, v) = schedule(app, &format!("/api/v1/pipelines/{path}"));
            assert_eq!(status, want, "[{}] {path}: {v}", app.backend);
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains(words), "{path}: {message}");
        }
        // Described in the OpenAPI document.
        let (_, doc) = json(app.get("/api/v1/openapi.json"));
        assert!(
            doc["paths"]["/api/v1/pipelines/{pipeline}/stages/{stage}/schedule"]["get"].is_object()
        );
    });
}

#[test]
fn a_schedule_deploys_the_newest_release_once_and_skips_when_nothing_is_new() {
    each_backend(|app| {
        let yaml = scheduled_pipeline("cadence", "*/2 * * * * *", "UTC", "");
        assert_eq!(app.import(&yaml).status(), 201);
        // Nothing has succeeded in dev yet: fires are skipped, and say so.
        let first = wait_until("a skipped fire", Duration::from_secs(15), || {
            let r = runs(&mut app.conn(), "cadence", "test");
            r.first().cloned()
        });
        assert_eq!(first.outcome, TriggerOutcome::Skipped, "{first:?}");
        assert!(
            first.detail.starts_with("skipped: nothing new"),
            "{first:?}"
        );
        assert_eq!(first.scheduled_for.and_utc().timestamp() % 2, 0);

        // 1.0.1 succeeded in dev; 1.0.2 did not: the next fire deploys 1.0.1.
        let r1 = add_release(
            &mut app.conn(),
            "cadence",
            "1.0.1",
            &[("dev", DeploymentState::Succeeded)],
        );
        add_release(
            &mut app.conn(),
            "cadence",
            "1.0.2",
            &[("dev", DeploymentState::Failed)],
        );
        let deployed = wait_until(
            "1.0.1 deployed by the schedule",
            Duration::from_secs(15),
            || {
                runs(&mut app.conn(), "cadence", "test")
                    .into_iter()
                    .find(|r| r.outcome == TriggerOutcome::Deployed)
            },
        );
        assert_eq!(deployed.release_id, Some(r1));
        assert_eq!(deployed.detail, "deployed 1.0.1");
        // Two more fires: nothing new.
        let after = deployed.scheduled_for;
        let skipped = wait_until("two fires after it", Duration::from_secs(15), || {
            let later: Vec<_> = runs(&mut app.conn(), "cadence", "test")
                .into_iter()
                .filter(|r| r.scheduled_for > after)
                .collect();
            (later.len() >= 2).then_some(later)
        });
        for r in &skipped {
            assert_eq!(r.outcome, TriggerOutcome::Skipped, "{r:?}");
            assert!(r.detail.contains("1.0.1"), "{r:?}");
        }

        // A newer release that succeeded in dev goes next, once.
        let r3 = add_release(
            &mut app.conn(),
            "cadence",
            "1.0.3",
            &[("dev", DeploymentState::Succeeded)],
        );
        let since = skipped.last().unwrap().scheduled_for;
        wait_until(
            "1.0.3 deployed, then a skip",
            Duration::from_secs(15),
            || {
                let later: Vec<_> = runs(&mut app.conn(), "cadence", "test")
                    .into_iter()
                    .filter(|r| r.scheduled_for > since)
                    .collect();
                let deployed = later.iter().position(|r| r.release_id == Some(r3))?;
                (later.len() > deployed + 1).then_some(())
            },
        );
        let mut conn = app.conn();
        let all = runs(&mut conn, "cadence", "test");
        let deploys: Vec<_> = all
            .iter()
            .filter(|r| r.outcome == TriggerOutcome::Deployed)
            .collect();
        assert_eq!(deploys.len(), 2, "{all:#?}");
        let instants: HashSet<_> = all.iter().map(|r| r.scheduled_for).collect();
        assert_eq!(instants.len(), all.len(), "one record per instant");
        let in_test = deployments_in(&mut conn, "cadence", "test");
        let versions: Vec<String> = in_test
            .iter()
            .map(|d| version_of(&mut conn, d.release_id))
            .collect();
        assert_eq!(versions, ["1.0.1", "1.0.3"]);
        for d in &in_test {
            assert_eq!(d.trigger, "schedule");
            assert_eq!(d.requested_by, "slipway");
        }
        // The fires are audited.
        let audited = storage::list_audit(&mut conn, None, 10_000)
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e.action == "schedule.fire" && e.subject == "stage:cadence/test")
                    .count()
            })
            .unwrap_or(0);
        assert!(audited >= all.len(), "{audited} < {}", all.len());
        drop(conn);

        // The stage page and the board show the fires.
        let html = app.page("/pipelines/cadence/stages/test/configure");
        let fires = texts(&html, "table.fires tbody tr").join("\n");
        assert!(fires.contains("skipped: nothing new"), "{fires}");
        let heads = texts(&html, "h3");
        assert!(heads.iter().any(|h| h == "Recent fires"), "{heads:?}");
        let board = app.page("/");
        let heads = texts(&board, "table.board thead th").join(" | ");
        assert!(heads.contains("last fire: skipped: nothing new"), "{heads}");

        // The API lists them too.
        let (status, v) = schedule(app, "/api/v1/pipelines/cadence/stages/test/schedule");
        assert_eq!(status, 200);
        assert!(v["last_fired_at"].is_string(), "{v}");
        assert_eq!(v["recent_runs"][0]["outcome"], "skipped", "{v}");
        assert!(
            v["recent_runs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["release"] == "1.0.3" && r["outcome"] == "deployed"),
            "{v}"
        );
    });
}

/// Starts an engine (with its scheduler) on `db`, as `slipway serve` does
/// after a restart, runs `f`, and stops it.
fn with_engine(db: &Db, f: impl FnOnce(&Engine)) {
    let data = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = Engine::new(
        db.clone(),
        data.path().to_path_buf(),
        std::sync::Arc::new(slipway::engine::secrets::SecretKey::generate().unwrap()),
        EngineConfig::default(),
    );
    rt.block_on(engine.start()).unwrap();
    f(&engine);
    rt.block_on(engine.shutdown());
}

#[test]
fn missed_fires_are_listed_and_catch_up_runs_the_newest_one() {
    for (label, test_db) in test_databases() {
        let db = test_db.connect().unwrap();
        let mut conn = db.get().unwrap();
        // Daily at 03:00 UTC, down for five days: five missed instants.
        for (name, catch_up) in [("eager", true), ("patient", false)] {
            let extra = if catch_up { "    catch_up: true\n" } else { "" };
            import_on(
                &mut conn,
                &scheduled_pipeline(name, "0 0 3 * * *", "UTC", extra),
            );
            add_release(
                &mut conn,
                name,
                "1.0.1",
                &[("dev", DeploymentState::Succeeded)],
            );
            add_release(
                &mut conn,
                name,
                "1.0.2",
                &[("dev", DeploymentState::Succeeded)],
            );
            let id = pipeline_id(&mut conn, name);
            let stage = store::find_stage(&mut conn, id, "test").unwrap().unwrap();
            let s = slipway::engine::triggers::schedules::schedule_of_stage(&stage).unwrap();
            let stale = s.next_fire(Utc::now() - chrono::Duration::days(5)).unwrap();
            store::set_next_fire(&mut conn, stage.id, Some(stale.naive_utc())).unwrap();
        }
        let stale_count = {
            let id = pipeline_id(&mut conn, "eager");
            let stage = store::find_stage(&mut conn, id, "test").unwrap().unwrap();
            let s = slipway::engine::triggers::schedules::schedule_of_stage(&stage).unwrap();
            s.due_fires(stage.next_fire_at.unwrap().and_utc(), Utc::now(), 100)
                .len()
        };
        assert!((5..=6).contains(&stale_count), "{stale_count}");
        drop(conn);

        with_engine(&db, |_| {
            wait_until("the catch-up pass", Duration::from_secs(20), || {
                let mut conn = db.get().unwrap();
                let eager = runs(&mut conn, "eager", "test").len();
                let patient = runs(&mut conn, "patient", "test").len();
                (eager == stale_count && patient == stale_count).then_some(())
            });
        });
        let mut conn = db.get().unwrap();
        // catch_up: true → the newest missed instant ran (deploying 1.0.2), the rest are missed.
        let eager = runs(&mut conn, "eager", "test");
        let (last, earlier) = eager.split_last().unwrap();
        assert_eq!(
            last.outcome,
            TriggerOutcome::Deployed,
            "[{label}] {eager:#?}"
        );
        assert!(last.detail.contains("catch-up"), "{last:?}");
        assert_eq!(version_of(&mut conn, last.release_id.unwrap()), "1.0.2");
        assert!(earlier.iter().all(|r| r.outcome == TriggerOutcome::Missed));
        assert_eq!(deployments_in(&mut conn, "eager", "test").len(), 1);
        // catch_up: false → every one is listed as missed; nothing deployed.
        let patient = runs(&mut conn, "patient", "test");
        assert!(
            patient.iter().all(|r| r.outcome == TriggerOutcome::Missed
                && r.detail.contains("no Slipway instance was running")),
            "[{label}] {patient:#?}"
        );
        assert!(deployments_in(&mut conn, "patient", "test").is_empty());
        // Both move on to the next instant after now.
        for name in ["eager", "patient"] {
            let id = pipeline_id(&mut conn, name);
            let stage = store::find_stage(&mut conn, id, "test").unwrap().unwrap();
            assert!(
                stage.next_fire_at.unwrap().and_utc() > Utc::now(),
                "{stage:?}"
            );
            assert_eq!(
                stage.last_fired_at.unwrap(),
                patient.last().unwrap().scheduled_for
            );
        }
        drop(conn);
        // A second start finds nothing more to catch up.
        with_engine(&db, |_| std::thread::sleep(Duration::from_millis(1500)));
        let mut conn = db.get().unwrap();
        assert_eq!(runs(&mut conn, "eager", "test").len(), stale_count);
        assert_eq!(runs(&mut conn, "patient", "test").len(), stale_count);
    }
}

/// Signs in a new user with `role`; returns the browser.
fn signed_in(app: &TestApp, name: &str, role: Role) -> reqwest::blocking::Client {
    app.user(name, role, "a long test password");
    let client = browser();
    let res = app.sign_in(&client, name, "a long test password", "/");
    assert_eq!(res.status(), 303, "sign in as {name}");
    client
}

fn get_page(app: &TestApp, client: &reqwest::blocking::Client, path: &str) -> Html {
    let res = client.get(app.url(path)).send().unwrap();
    assert_eq!(res.status(), 200, "GET {path}");
    Html::parse_document(&res.text().unwrap())
}

/// The stage form's fields as the page fills them, with `changes` applied
/// (every change sets a value; `stage_form::form_fields` also unticks).
fn form_fields(html: &Html, changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let changes: Vec<(&str, Option<&str>)> = changes.iter().map(|(n, v)| (*n, Some(*v))).collect();
    crate::stage_form::form_fields(html, &changes)
}

fn revision_of(app: &TestApp, pipeline: &str) -> i64 {
    let (_, v) = json(app.get(&format!("/api/v1/pipelines/{pipeline}")));
    v["revision"].as_i64().unwrap()
}

#[test]
fn a_release_manager_edits_a_stage_through_the_form() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let path = "/pipelines/space-game-web/stages/test/configure";
        let manager = signed_in(app, "rita", Role::ReleaseManager);
        let html = get_page(app, &manager, path);
        assert_eq!(attrs(&html, "#cron", "value"), ["0 0 3 * * *"]);
        assert_eq!(attrs(&html, "#timezone", "value"), ["America/Los_Angeles"]);
        assert_eq!(attrs(&html, "#trigger-schedule", "checked").len(), 1);
        assert!(attrs(&html, "fieldset.form-body", "disabled").is_empty());
        let labels = attrs(&html, "#stage-form label[for]", "for");
        for id in [
            "cron",
            "timezone",
            "tasks",
            "variables",
            "parallel",
            "policy",
        ] {
            assert!(labels.iter().any(|l| l == id), "a label for {id}");
        }
        let post =
            |fields: &[(String, String)]| manager.post(app.url(path)).form(fields).send().unwrap();

        // Preview: the next fire times of what is typed; nothing is stored.
        let res = post(&form_fields(
            &html,
            &[
                ("action", "preview"),
                ("cron", "0 30 2 * * *"),
                ("timezone", "Europe/Berlin"),
            ],
        ));
        assert_eq!(res.status(), 200);
        let preview = Html::parse_document(&res.text().unwrap());
        assert_eq!(texts(&preview, ".preview ol li").len(), 5);
        assert!(texts(&preview, ".preview h3")[0].contains("Europe/Berlin"));
        assert_eq!(attrs(&preview, "#cron", "value"), ["0 30 2 * * *"]);
        assert_eq!(revision_of(app, "space-game-web"), 1);

        // A bad cron: the error next to the field, 422, input kept, nothing stored.
        let res = post(&form_fields(&html, &[("cron", "0 0 25 * * *")]));
        assert_eq!(res.status(), 422);
        let page = Html::parse_document(&res.text().unwrap());
        let error = texts(&page, "#cron-error").join(" ");
        assert!(
            error.contains("0 0 25 * * *") || error.contains("hour"),
            "{error}"
        );
        let described = attrs(&page, "#cron", "aria-describedby").join(" ");
        assert!(described.contains("cron-error"), "{described}");
        assert_eq!(attrs(&page, "#cron", "aria-invalid"), ["true"]);
        assert_eq!(attrs(&page, "#cron", "value"), ["0 0 25 * * *"]);
        assert!(
            texts(&page, "#error-summary a")
                .join(" ")
                .contains("0 0 25")
        );
        // A bad time zone, a bad task and a bad variable: each next to its field.
        let res = post(&form_fields(
            &html,
            &[
                ("timezone", "Europe/Berln"),
                (
                    "tasks",
                    "- deploy_slot: { app: space-game, slot: nowhere }\n",
                ),
                ("variables", "1BAD=x"),
            ],
        ));
        assert_eq!(res.status(), 422);
        let page = Html::parse_document(&res.text().unwrap());
        assert!(texts(&page, "#timezone-error")[0].contains("Europe/Berlin"));
        assert!(
            texts(&page, "#tasks-error")[0].contains("line 1"),
            "{:?}",
            texts(&page, "#tasks-error")
        );
        assert!(texts(&page, "#variables-error")[0].contains("1BAD"));
        assert_eq!(revision_of(app, "space-game-web"), 1);

        // Without a CSRF token: refused.
        let no_csrf: Vec<(String, String)> = form_fields(&html, &[])
            .into_iter()
            .filter(|(n, _)| n != "csrf")
            .collect();
        assert_eq!(post(&no_csrf).status(), 403);

        // A good edit: a new revision with who and a comment, shown with its diff.
        let res = post(&form_fields(
            &html,
            &[
                ("cron", "0 30 2 * * *"),
                ("timezone", "Europe/Berlin"),
                ("variables", "GREETING=hello\n"),
                ("catch_up", "on"),
            ],
        ));
        assert_eq!(res.status(), 303);
        let location = res.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(location, format!("{path}?saved=2"));
        assert_eq!(revision_of(app, "space-game-web"), 2);
        let html = get_page(app, &manager, &location);
        assert!(texts(&html, ".notice")[0].contains("revision 2"));
        let revision = texts(&html, "#revision-2 p").join(" ");
        assert!(revision.contains("rita"), "{revision}");
        assert!(revision.contains("stage test edited"), "{revision}");
        let added = texts(&html, "#revision-2 pre.diff ins");
        let removed = texts(&html, "#revision-2 pre.diff del");
        assert!(
            added
                .iter()
                .any(|l| l.starts_with("+") && l.contains("0 30 2 * * *")),
            "{added:?}"
        );
        assert!(added.iter().any(|l| l.contains("GREETING")), "{added:?}");
        assert!(
            removed
                .iter()
                .any(|l| l.starts_with("-") && l.contains("0 0 3 * * *")),
            "{removed:?}"
        );
        assert_eq!(attrs(&html, "#cron", "value"), ["0 30 2 * * *"]);
        let export = app
            .get("/api/v1/pipelines/space-game-web/export")
            .text()
            .unwrap();
        assert!(export.contains("timezone: Europe/Berlin"), "{export}");
        assert!(export.contains("catch_up: true"), "{export}");
        // The scheduler picks up the new schedule.
        wait_until("the new next fire", Duration::from_secs(10), || {
            let (_, v) = schedule(app, "/api/v1/pipelines/space-game-web/stages/test/schedule");
            (v["next_fire_at"] == v["fire_times"][0]).then_some(())
        });

        // Saving it unchanged stores nothing.
        let res = post(&form_fields(&html, &[]));
        assert_eq!(res.status(), 200);
        let page = Html::parse_document(&res.text().unwrap());
        assert!(texts(&page, ".notice")[0].contains("Nothing changed"));
        assert_eq!(revision_of(app, "space-game-web"), 2);

        // A form made from an older revision does not overwrite a newer one.
        let res = post(&form_fields(&html, &[("revision", "1"), ("parallel", "2")]));
        assert_eq!(res.status(), 409);
        assert_eq!(revision_of(app, "space-game-web"), 2);

        // A viewer sees the form read-only and may not save.
        let viewer = signed_in(app, "vera", Role::Viewer);
        let page = get_page(app, &viewer, path);
        assert_eq!(attrs(&page, "fieldset.form-body", "disabled").len(), 1);
        let fields = form_fields(&page, &[("parallel", "3")]);
        let res = viewer.post(app.url(path)).form(&fields).send().unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(revision_of(app, "space-game-web"), 2);
        // Headings in order on the page.
        let levels: Vec<u8> = {
            let sel = scraper::Selector::parse("h1, h2, h3").unwrap();
            page.select(&sel)
                .map(|h| h.value().name()[1..].parse().unwrap())
                .collect()
        };
        assert_eq!(levels[0], 1);
        assert!(levels.windows(2).all(|w| w[1] <= w[0] + 1), "{levels:?}");
    });
}

#[test]
fn board_cells_say_why_a_release_is_not_there_yet() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let p = "space-game-web";
        let mut conn = app.conn();
        use DeploymentState::*;
        add_release(
            &mut conn,
            p,
            "1.0.1",
            &[
                ("dev", Succeeded),
                ("test", Succeeded),
                ("preprod", Succeeded),
            ],
        );
        add_release(
            &mut conn,
            p,
            "1.0.2",
            &[("dev", Succeeded), ("test", Succeeded)],
        );
        add_release(&mut conn, p, "1.0.3", &[("dev", Succeeded)]);
        add_release(&mut conn, p, "1.0.4", &[("dev", Failed)]);
        let r5 = add_release(
            &mut conn,
            p,
            "1.0.5",
            &[
                ("dev", Succeeded),
                ("test", Succeeded),
                ("preprod", WaitingForApproval),
            ],
        );
        // 1.0.2 waited for preprod and was superseded by 1.0.5.
        {
            use slipway::storage::schema::deployments as d;
            let id = pipeline_id(&mut conn, p);
            let two = storage::find_release(&mut conn, id, "1.0.2")
                .unwrap()
                .unwrap();
            storage::insert_deployment(
                &mut conn,
                &NewDeployment {
                    pipeline_id: id,
                    release_id: two.id,
                    stage: "preprod".into(),
                    state: Superseded,
                    trigger: "manual".into(),
                    requested_by: "mara".into(),
                    reason: None,
                },
            )
            .unwrap();
            diesel::update(
                d::table
                    .filter(d::release_id.eq(two.id))
                    .filter(d::stage.eq("preprod")),
            )
            .set(d::superseded_by.eq(r5))
            .execute(&mut *conn)
            .unwrap();
        }
        drop(conn);
        let html = app.page("/");
        let row = |version: &str| -> HashMap<String, String> {
            let sel = scraper::Selector::parse("table.board tbody tr").unwrap();
            let td = scraper::Selector::parse("td").unwrap();
            let heads = texts(&html, "table.board thead th");
            let tr = html
                .select(&sel)
                .find(|tr| tr.text().any(|t| t.trim() == version))
                .unwrap();
            tr.select(&td)
                .zip(heads.iter().skip(1))
                .map(|(cell, head)| {
                    let text = cell.text().collect::<Vec<_>>().join(" ");
                    (
                        head.split_whitespace().next().unwrap().to_string(),
                        text.split_whitespace().collect::<Vec<_>>().join(" "),
                    )
                })
                .collect()
        };
        let r = row("1.0.5");
        assert!(r["preprod"].contains("Waiting for approval"), "{r:?}");
        assert!(r["preprod"].contains("waits for approval"), "{r:?}");
        assert!(r["production"].contains("after preprod succeeds"), "{r:?}");
        let r = row("1.0.4");
        assert!(r["dev"].contains("Failed"), "{r:?}");
        assert!(
            r["test"].contains("scheduled: once it succeeds in dev"),
            "{r:?}"
        );
        let r = row("1.0.3");
        // 1.0.5 is newer and went to test already.
        assert!(r["test"].contains("superseded by 1.0.5"), "{r:?}");
        let r = row("1.0.2");
        assert!(r["preprod"].contains("superseded by 1.0.5"), "{r:?}");
        let r = row("1.0.1");
        assert!(
            r["production"].contains("not deployed automatically"),
            "{r:?}"
        );
        // The section refreshes itself when something changes (live pages).
        assert_eq!(attrs(&html, "section.pipeline", "data-live").len(), 1);
        // The scheduled stage's head says when it fires next.
        let heads = texts(&html, "table.board thead th");
        assert!(heads[2].contains("next "), "{heads:?}");

        // A new release that succeeded in dev waits for the schedule; preprod is manual.
        let mut conn = app.conn();
        add_release(&mut conn, p, "1.0.6", &[("dev", Succeeded)]);
        add_release(
            &mut conn,
            p,
            "1.0.7",
            &[("dev", Succeeded), ("test", Succeeded)],
        );
        drop(conn);
        let html = app.page("/");
        let sel = scraper::Selector::parse("table.board tbody tr").unwrap();
        let rows: Vec<String> = html
            .select(&sel)
            .map(|tr| {
                tr.text()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let seven = rows.iter().find(|r| r.starts_with("1.0.7")).unwrap();
        assert!(
            seven.contains("manual: deploy from the stage page"),
            "{seven}"
        );
        let six = rows.iter().find(|r| r.starts_with("1.0.6")).unwrap();
        assert!(six.contains("superseded by 1.0.7"), "{six}");

        // Release history explains the same cells, also for old pages.
        let history = app.page("/pipelines/space-game-web/releases");
        let all = texts(&history, "table.board tbody tr").join("\n");
        assert!(all.contains("scheduled: once it succeeds in dev"), "{all}");
        assert!(all.contains("superseded by 1.0.7"), "{all}");

        // A schedule with only an older release ready says when it fires.
        let yaml = scheduled_pipeline("tonight", "0 0 3 * * *", "America/Los_Angeles", "");
        assert_eq!(app.import(&yaml).status(), 201);
        add_release(&mut app.conn(), "tonight", "2.0.1", &[("dev", Succeeded)]);
        let html = app.page("/");
        let cells = texts(&html, "#board-tonight table.board tbody td").join(" | ");
        assert!(cells.contains("scheduled: next fire"), "{cells}");
        assert!(cells.contains("03:00 P"), "{cells}");
        // Live even with nothing running: a new build or release must appear.
        assert_eq!(attrs(&html, "#board-tonight", "data-live").len(), 1);
    });
}

#[test]
fn the_drawing_shows_the_stored_next_fire_time() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let mut conn = app.conn();
        let id = pipeline_id(&mut conn, "space-game-web");
        let stage = store::find_stage(&mut conn, id, "test").unwrap().unwrap();
        // Far ahead, so the scheduler leaves it alone: 2030-01-04 03:00 UTC
        // is Thursday 19:00 in Los Angeles.
        let at = chrono::NaiveDate::from_ymd_opt(2030, 1, 4)
            .unwrap()
            .and_hms_opt(3, 0, 0)
            .unwrap();
        store::set_next_fire(&mut conn, stage.id, Some(at)).unwrap();
        drop(conn);
        let html = app.page("/pipelines/space-game-web");
        let details = texts(&html, "svg.drawing .edge-detail").join(" | ");
        assert!(details.contains("next Thu 19:00 PST"), "{details}");
    });
}

/// A running `slipway serve`.
struct Serve {
    child: std::process::Child,
    _data: tempfile::TempDir,
}

impl Serve {
    fn start(database_url: &str) -> Serve {
        let data = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
            .arg("--data-dir")
            .arg(data.path())
            .args(["--database-url", database_url])
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--router-listen",
                "127.0.0.1:0",
            ])
            .env_remove("SLIPWAY_LISTEN")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        Serve { child, _data: data }
    }

    fn stop(mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn two_instances_on_one_postgres_fire_each_instant_once() {
    let test_db = match TestDb::postgres() {
        Ok(db) => db,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("PostgreSQL is required under CI=true: {e}")
        }
        Err(e) => {
            eprintln!(
                "skipping two_instances_on_one_postgres_fire_each_instant_once: PostgreSQL is unreachable ({e})"
            );
            return;
        }
    };
    let db = test_db.connect().unwrap();
    {
        let mut conn = db.get().unwrap();
        import_on(
            &mut conn,
            &scheduled_pipeline("twins", "* * * * * *", "UTC", ""),
        );
        add_release(
            &mut conn,
            "twins",
            "1.0.1",
            &[("dev", DeploymentState::Succeeded)],
        );
    }
    let a = Serve::start(&test_db.url);
    let b = Serve::start(&test_db.url);
    let started = Utc::now();
    // New releases arrive while both run: each must go to test exactly once.
    for (i, version) in ["1.0.2", "1.0.3", "1.0.4"].iter().enumerate() {
        wait_until("fires", Duration::from_secs(60), || {
            let n = runs(&mut db.get().unwrap(), "twins", "test").len();
            (n >= 5 * (i + 1)).then_some(())
        });
        add_release(
            &mut db.get().unwrap(),
            "twins",
            version,
            &[("dev", DeploymentState::Succeeded)],
        );
    }
    wait_until("twenty fires", Duration::from_secs(60), || {
        let n = runs(&mut db.get().unwrap(), "twins", "test").len();
        (n >= 22).then_some(())
    });
    a.stop();
    b.stop();

    let mut conn = db.get().unwrap();
    let all = runs(&mut conn, "twins", "test");
    let instants: Vec<i64> = all
        .iter()
        .map(|r| r.scheduled_for.and_utc().timestamp())
        .collect();
    let unique: HashSet<i64> = instants.iter().copied().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "one record per instant: {instants:?}"
    );
    // No instant was lost while they ran: consecutive seconds.
    assert!(
        instants.windows(2).all(|w| w[1] == w[0] + 1),
        "every second fired once: {instants:?}"
    );
    assert!(
        all.iter().all(|r| r.outcome != TriggerOutcome::Failed),
        "{all:#?}"
    );
    let by: HashMap<&str, usize> = all.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.instance.as_str()).or_default() += 1;
        m
    });
    eprintln!("{} fires since {started}: {by:?}", all.len());
    // Every release deployed to test once, never twice.
    let in_test = deployments_in(&mut conn, "twins", "test");
    let mut versions: Vec<String> = in_test
        .iter()
        .map(|d| version_of(&mut conn, d.release_id))
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        ["1.0.1", "1.0.2", "1.0.3", "1.0.4"],
        "{in_test:#?}"
    );
    let deployed = all
        .iter()
        .filter(|r| r.outcome == TriggerOutcome::Deployed)
        .count();
    assert_eq!(deployed, 4, "{all:#?}");
}
