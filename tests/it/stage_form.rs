//! The stage form's approvals and gates: a release manager sets them on a
//! stage through the form (with its CSRF token), the export shows them,
//! other stages stay byte for byte as they were; an expression error, a bad
//! approver and a gate without checks are refused next to their fields
//! (422, the input kept) and change nothing.

use scraper::Html;
use serde_json::Value;
use slipway::domain::{
    ApprovalMode, ApprovalPolicy, Approver, CheckKind, Duration, Role, parse_definition,
};

use crate::helpers::{SPEC_PIPELINE, TestApp, attrs, each_backend, json, texts};

const PIPELINE: &str = "space-game-web";
const PATH: &str = "/pipelines/space-game-web/stages/test/configure";

/// The stage form's fields as a browser would send them (ticked boxes only,
/// the selected options), with `changes` applied: a value replaces the
/// field's, `None` unticks a checkbox (drops the field).
pub fn form_fields(html: &Html, changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let sel = |s: &str| scraper::Selector::parse(s).unwrap();
    for input in html.select(&sel("#stage-form input")) {
        let v = input.value();
        let (Some(name), kind) = (v.attr("name"), v.attr("type").unwrap_or("text")) else {
            continue;
        };
        if (kind == "radio" || kind == "checkbox") && v.attr("checked").is_none() {
            continue;
        }
        fields.push((name.into(), v.attr("value").unwrap_or_default().into()));
    }
    for area in html.select(&sel("#stage-form textarea")) {
        let name = area.value().attr("name").unwrap();
        fields.push((name.into(), area.text().collect()));
    }
    for select in html.select(&sel("#stage-form select")) {
        let name = select.value().attr("name").unwrap();
        let chosen = select
            .select(&sel("option[selected]"))
            .next()
            .and_then(|o| o.value().attr("value"))
            .unwrap_or_default();
        fields.push((name.into(), chosen.into()));
    }
    for (name, value) in changes {
        fields.retain(|(n, _)| n != name);
        if let Some(value) = value {
            fields.push(((*name).into(), (*value).into()));
        }
    }
    fields
}

fn revision_of(app: &TestApp) -> i64 {
    let (_, v): (_, Value) = json(app.get(&format!("/api/v1/pipelines/{PIPELINE}")));
    v["revision"].as_i64().unwrap()
}

fn export(app: &TestApp) -> String {
    let res = app.get(&format!("/api/v1/pipelines/{PIPELINE}/export"));
    assert_eq!(res.status(), 200);
    res.text().unwrap()
}

/// Whether `new` is `old` with lines added only (nothing removed or changed).
fn only_added(old: &str, new: &str) -> Result<(), Vec<String>> {
    let diff = similar::TextDiff::from_lines(old, new);
    let removed: Vec<String> = diff
        .iter_all_changes()
        .filter(|c| c.tag() == similar::ChangeTag::Delete)
        .map(|c| c.value().to_string())
        .collect();
    if removed.is_empty() {
        Ok(())
    } else {
        Err(removed)
    }
}

/// The text of the error shown next to field `id` (empty when none).
fn error_of(page: &Html, id: &str) -> String {
    texts(page, &format!("#{id}-error")).join(" ")
}

/// The approval and gate of the happy path, typed into the empty form.
const GOOD: &[(&str, Option<&str>)] = &[
    ("approvals.before.enabled", Some("on")),
    ("approvals.before.approvers", Some("group:management")),
    ("approvals.before.policy", Some("any")),
    ("approvals.before.timeout", Some("7d")),
    ("approvals.before.fresh_sign_in", Some("15m")),
    ("gates.before.enabled", Some("on")),
    ("gates.before.interval", Some("1m")),
    ("gates.before.checks.0.name", Some("status page")),
    ("gates.before.checks.0.kind", Some("http")),
    (
        "gates.before.checks.0.url",
        Some("https://status.example.com/health"),
    ),
    (
        "gates.before.checks.0.headers",
        Some("Authorization: Bearer ${{ secrets.STATUS_TOKEN }}\r\n"),
    ),
    (
        "gates.before.checks.0.success",
        Some("status == 200 && body.status == 'healthy'"),
    ),
];

#[test]
fn a_release_manager_sets_approvals_and_gates_through_the_form() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let manager = app.member_browser("rita", Role::ReleaseManager);
        let html = app.page_as(&manager, PATH);
        // Every new field has its label.
        let labels = attrs(&html, "#stage-form label[for]", "for");
        for id in [
            "approvals-before-approvers",
            "approvals-before-policy",
            "approvals-before-n",
            "approvals-before-timeout",
            "approvals-before-fresh-sign-in",
            "approvals-after-approvers",
            "approvals-order",
            "gates-before-delay",
            "gates-before-interval",
            "gates-before-timeout",
            "gates-before-steady",
            "gates-before-checks-0-kind",
            "gates-before-checks-0-url",
            "gates-before-checks-0-success",
            "gates-after-checks-0-threshold",
        ] {
            assert!(labels.iter().any(|l| l == id), "a label for {id}");
        }
        // No approval, no gate: unticked, with the defaults filled in.
        assert!(attrs(&html, "#approvals-before-enabled", "checked").is_empty());
        assert_eq!(attrs(&html, "#approvals-before-timeout", "value"), ["30d"]);
        assert_eq!(attrs(&html, "#gates-before-interval", "value"), ["5m"]);
        let exported = export(app);
        let post =
            |fields: &[(String, String)]| manager.post(app.url(PATH)).form(fields).send().unwrap();

        // An expression that does not compile: its position next to the
        // success field, 422, the input kept, nothing stored.
        let mut bad = GOOD.to_vec();
        bad.push(("gates.before.checks.0.success", Some("status ==")));
        let res = post(&form_fields(&html, &bad));
        assert_eq!(res.status(), 422);
        let page = Html::parse_document(&res.text().unwrap());
        let error = error_of(&page, "gates-before-checks-0-success");
        assert!(error.contains("line 1, column"), "{error}");
        assert_eq!(
            attrs(&page, "#gates-before-checks-0-success", "aria-invalid"),
            ["true"]
        );
        let described = attrs(&page, "#gates-before-checks-0-success", "aria-describedby");
        assert!(
            described
                .join(" ")
                .contains("gates-before-checks-0-success-error"),
            "{described:?}"
        );
        assert_eq!(
            texts(&page, "textarea#gates-before-checks-0-success"),
            ["status =="]
        );
        assert_eq!(
            attrs(&page, "#gates-before-checks-0-url", "value"),
            ["https://status.example.com/health"]
        );
        assert_eq!(
            attrs(&page, "#approvals-before-fresh-sign-in", "value"),
            ["15m"]
        );
        assert_eq!(
            attrs(&page, "#approvals-before-enabled", "checked").len(),
            1
        );
        let links = attrs(&page, "#error-summary a", "href");
        assert_eq!(links, ["#gates-before-checks-0-success"]);
        // A new empty check is offered after the one typed.
        assert_eq!(attrs(&page, "#gates-before-checks-1-url", "value"), [""]);
        assert_eq!(revision_of(app), 1);
        assert_eq!(export(app), exported);

        // A bad approver, N larger than the users listed, a bad duration:
        // each next to its field.
        let mut bad = GOOD.to_vec();
        bad.extend([
            ("approvals.before.approvers", Some("alice, team:ops")),
            ("approvals.after.enabled", Some("on")),
            ("approvals.after.approvers", Some("alice\r\nbob")),
            ("approvals.after.policy", Some("at_least")),
            ("approvals.after.n", Some("3")),
            ("gates.before.timeout", Some("an hour")),
        ]);
        let res = post(&form_fields(&html, &bad));
        assert_eq!(res.status(), 422);
        let page = Html::parse_document(&res.text().unwrap());
        let error = error_of(&page, "approvals-before-approvers");
        assert!(error.contains("team:ops"), "{error}");
        assert!(error_of(&page, "approvals-after-n").contains("only 2"));
        assert!(error_of(&page, "gates-before-timeout").contains("an hour"));
        assert_eq!(
            texts(&page, "textarea#approvals-before-approvers"),
            ["alice, team:ops"]
        );
        assert_eq!(revision_of(app), 1);
        assert_eq!(export(app), exported);

        // The good form: a new revision, shown in the export.
        let res = post(&form_fields(&html, GOOD));
        assert_eq!(res.status(), 303, "{}", res.text().unwrap_or_default());
        assert_eq!(revision_of(app), 2);
        let yaml = export(app);
        for line in [
            "group:management",
            "timeout: 7d",
            "fresh_sign_in: 15m",
            "url: https://status.example.com/health",
            "interval: 1m",
        ] {
            assert!(yaml.contains(line), "{line} in {yaml}");
        }
        let def = parse_definition(&yaml, "export.yaml").unwrap();
        let stage = def.stage("test").unwrap();
        assert_eq!(
            stage.approvals.before,
            Some(ApprovalPolicy {
                approvers: vec![Approver::Group("management".into())],
                policy: ApprovalMode::Any,
                timeout: Duration::from_days(7),
                fresh_sign_in: Some(Duration::from_mins(15)),
                requester_can_approve: false,
                exclude_authors: false,
            })
        );
        assert_eq!(stage.approvals.after, None);
        let gate = stage.gates.before.as_ref().unwrap();
        assert_eq!(gate.interval, Duration::from_mins(1));
        assert_eq!(gate.checks.len(), 1);
        assert_eq!(gate.checks[0].name.as_deref(), Some("status page"));
        match &gate.checks[0].kind {
            CheckKind::Http {
                url,
                headers,
                success,
                ..
            } => {
                assert_eq!(url, "https://status.example.com/health");
                assert_eq!(
                    headers["Authorization"],
                    "Bearer ${{ secrets.STATUS_TOKEN }}"
                );
                assert_eq!(success, "status == 200 && body.status == 'healthy'");
            }
            other => panic!("{other:?}"),
        }
        // Only lines were added: every other field is exported as before.
        let html = app.page_as(&manager, &format!("{PATH}?saved=2"));
        assert!(
            texts(&html, "#revision-2 p")
                .join(" ")
                .contains("stage test edited")
        );
        assert!(texts(&html, "#revision-2 pre.diff del").is_empty());
        assert!(!texts(&html, "#revision-2 pre.diff ins").is_empty());
        assert_eq!(only_added(&exported, &yaml), Ok(()));

        // The page shows what is stored; saving it as it is stores nothing.
        assert_eq!(
            attrs(&html, "#approvals-before-enabled", "checked").len(),
            1
        );
        assert_eq!(
            texts(&html, "textarea#approvals-before-approvers"),
            ["group:management"]
        );
        assert_eq!(
            attrs(&html, "#gates-before-checks-0-url", "value"),
            ["https://status.example.com/health"]
        );
        assert_eq!(
            attrs(
                &html,
                "#gates-before-checks-0-kind option[selected]",
                "value"
            ),
            ["http"]
        );
        let res = post(&form_fields(&html, &[]));
        assert_eq!(res.status(), 200);
        let page = Html::parse_document(&res.text().unwrap());
        assert!(texts(&page, ".notice")[0].contains("Nothing changed"));
        assert_eq!(revision_of(app), 2);
        assert_eq!(export(app), yaml);

        // Removing the only check of an enabled gate: refused.
        let res = post(&form_fields(
            &html,
            &[("gates.before.checks.0.remove", Some("on"))],
        ));
        assert_eq!(res.status(), 422);
        let page = Html::parse_document(&res.text().unwrap());
        assert!(error_of(&page, "gates-before-checks").contains("at least one check"));
        assert_eq!(
            attrs(&page, "#gates-before-checks-0-remove", "checked").len(),
            1
        );
        assert_eq!(revision_of(app), 2);
        // A second check added, the first removed, the approval dropped.
        let res = post(&form_fields(
            &html,
            &[
                ("approvals.before.enabled", None),
                ("gates.before.checks.0.remove", Some("on")),
                ("gates.before.checks.1.kind", Some("command")),
                ("gates.before.checks.1.run", Some("./smoke.sh")),
                ("gates.before.checks.1.consecutive_successes", Some("2")),
            ],
        ));
        assert_eq!(res.status(), 303);
        assert_eq!(revision_of(app), 3);
        let def = parse_definition(&export(app), "export.yaml").unwrap();
        let stage = def.stage("test").unwrap();
        assert_eq!(stage.approvals.before, None);
        let checks = &stage.gates.before.as_ref().unwrap().checks;
        assert_eq!(checks.len(), 1);
        assert_eq!(
            checks[0].kind,
            CheckKind::Command {
                run: "./smoke.sh".into()
            }
        );
        assert_eq!(checks[0].consecutive_successes, 2);
        // The other stages did not change.
        let first = parse_definition(&exported, "export.yaml").unwrap();
        for name in ["dev", "preprod", "production"] {
            assert_eq!(def.stage(name), first.stage(name), "{name}");
        }
    });
}

#[test]
fn a_stage_with_approvals_and_gates_round_trips_through_its_form() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let manager = app.member_browser("rita", Role::ReleaseManager);
        let path = "/pipelines/space-game-web/stages/production/configure";
        let html = app.page_as(&manager, path);
        assert_eq!(
            texts(&html, "textarea#approvals-before-approvers"),
            ["group:management"]
        );
        assert_eq!(attrs(&html, "#approvals-before-timeout", "value"), ["7d"]);
        assert_eq!(
            attrs(&html, "#approvals-before-fresh-sign-in", "value"),
            ["15m"]
        );
        assert_eq!(attrs(&html, "#gates-before-steady", "value"), ["10m"]);
        assert_eq!(
            texts(&html, "textarea#gates-before-checks-0-success"),
            ["status == 200 && body.status == 'healthy'"]
        );
        let exported = export(app);
        let post =
            |fields: &[(String, String)]| manager.post(app.url(path)).form(fields).send().unwrap();
        let res = post(&form_fields(&html, &[]));
        assert_eq!(res.status(), 200);
        assert_eq!(revision_of(app), 1);
        // The approvals after the gates, the gate's check asking on an
        // inconclusive sample: only those lines change.
        let res = post(&form_fields(
            &html,
            &[
                ("approvals.order", Some("after_gates")),
                ("gates.before.checks.0.on_inconclusive", Some("ask")),
            ],
        ));
        assert_eq!(res.status(), 303);
        let yaml = export(app);
        assert!(yaml.contains("order: after_gates"), "{yaml}");
        assert!(yaml.contains("on_inconclusive: ask"), "{yaml}");
        assert_eq!(only_added(&exported, &yaml), Ok(()));
        // A viewer sees the fields read-only and may not save them.
        let viewer = app.member_browser("vera", Role::Viewer);
        let page = app.page_as(&viewer, path);
        assert_eq!(attrs(&page, "fieldset.form-body", "disabled").len(), 1);
        let fields = form_fields(&page, &[("approvals.before.enabled", None)]);
        let res = viewer.post(app.url(path)).form(&fields).send().unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(revision_of(app), 2);
    });
}

#[test]
fn a_tampered_revision_is_refused_and_the_queue_takes_the_yaml_bounds() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let manager = app.member_browser("rita", Role::ReleaseManager);
        let html = app.page_as(&manager, PATH);
        let exported = export(app);
        let post =
            |fields: &[(String, String)]| manager.post(app.url(PATH)).form(fields).send().unwrap();
        // A revision that is not a number is refused with its message, never
        // taken as the current one: nothing is stored.
        for revision in ["latest", ""] {
            let res = post(&form_fields(
                &html,
                &[("revision", Some(revision)), ("parallel", Some("2"))],
            ));
            assert_eq!(res.status(), 400, "revision {revision:?}");
            let body = res.text().unwrap();
            assert!(body.contains("is not a revision number"), "{body}");
            assert_eq!(revision_of(app), 1);
            assert_eq!(export(app), exported);
        }
        // The form accepts what the YAML accepts (`queue.parallel` 1 to
        // 1000), and refuses the rest next to the field with the same bounds.
        let res = post(&form_fields(&html, &[("parallel", Some("1001"))]));
        assert_eq!(res.status(), 422);
        let page = Html::parse_document(&res.text().unwrap());
        let error = error_of(&page, "parallel");
        assert!(error.contains("from 1 to 1000"), "{error}");
        assert_eq!(attrs(&page, "#parallel", "max"), ["1000"]);
        assert_eq!(revision_of(app), 1);
        let res = post(&form_fields(&html, &[("parallel", Some("1000"))]));
        assert_eq!(res.status(), 303);
        assert_eq!(revision_of(app), 2);
        let def = parse_definition(&export(app), "export.yaml").unwrap();
        assert_eq!(def.stage("test").unwrap().queue.parallel, 1000);
    });
}
