//! The stage form: stored stages fill it and parse back unchanged, posted
//! fields become domain values, and every problem lands next to its field.

use super::form::*;
use super::parse::*;
use super::views::*;
use crate::domain::definition::defaults;
use crate::domain::{
    ApprovalMode, ApprovalOrder, Approver, CheckKind, Duration, Gates, InconclusivePolicy,
    PipelineDefinition, Threshold,
};
use crate::engine::pipelines::stages::{self as edit, StageEdit};

fn def() -> PipelineDefinition {
    crate::domain::parse_definition(crate::domain::EXAMPLE_YAML, "example").unwrap()
}

fn form(def: &PipelineDefinition, stage: &str) -> StageForm {
    let i = def.stage_index(stage).unwrap();
    form_of(&def.stages[i], 1)
}

#[test]
fn the_stored_stage_parses_back_unchanged() {
    let def = def();
    for (i, stage) in def.stages.iter().enumerate() {
        let f = form(&def, stage.name.as_str());
        let edit = parse_form(&def, i, &f).unwrap();
        assert_eq!(edit.trigger, stage.trigger, "{}", stage.name);
        assert_eq!(edit.tasks, stage.tasks);
        assert_eq!(edit.queue, stage.queue);
    }
}

#[test]
fn bad_fields_are_reported_next_to_them() {
    let def = def();
    let mut f = form(&def, "test");
    f.cron = "0 0 25 * * *".into();
    f.timezone = "Europe/Berln".into();
    f.parallel = "0".into();
    f.variables = "not a variable".into();
    let errors = parse_form(&def, 1, &f).unwrap_err();
    assert!(errors.cron.is_some());
    assert!(
        errors.timezone.as_ref().unwrap().contains("Europe/Berlin"),
        "{errors:?}"
    );
    assert!(errors.parallel.is_some());
    assert_eq!(errors.variables.len(), 1);
    let mut f = form(&def, "test");
    f.trigger = "after_stage".into();
    f.after_stage = "production".into();
    assert!(parse_form(&def, 1, &f).unwrap_err().after_stage.is_some());
}

#[test]
fn diffs_mark_lines_with_signs() {
    let (lines, added, removed) = diff_lines("a\nb\nc\n", "a\nB\nc\nd\n");
    assert_eq!((added, removed), (2, 1));
    let text: Vec<String> = lines
        .iter()
        .map(|l| format!("{}{}", l.sign, l.text))
        .collect();
    assert_eq!(text, vec![" a", "-b", "+B", " c", "+d"]);
}

/// Every stage of a definition exercising every approval and check field.
fn everything() -> PipelineDefinition {
    crate::domain::parse_definition(
        include_str!("../../../domain/fixtures/everything.yaml"),
        "everything.yaml",
    )
    .unwrap()
}

#[test]
fn stored_approvals_and_gates_parse_back_unchanged() {
    for def in [def(), everything()] {
        for (i, stage) in def.stages.iter().enumerate() {
            let f = form_of(stage, 1);
            let edit = parse_form(&def, i, &f)
                .unwrap_or_else(|e| panic!("{}: {:?}", stage.name, e.summary()));
            assert_eq!(edit.approvals, stage.approvals, "{}", stage.name);
            assert_eq!(edit.gates, stage.gates, "{}", stage.name);
            // Saving the unchanged form gives the same definition, byte for byte.
            let edited = edit::apply_edit(&def, stage.name.as_str(), edit).unwrap();
            assert_eq!(
                crate::domain::to_canonical_yaml(&edited),
                crate::domain::to_canonical_yaml(&def)
            );
        }
    }
    let staging = everything().stage("staging").unwrap().clone();
    let f = form_of(&staging, 1);
    assert_eq!(f.approvals_before.approvers, "bob, group:qa");
    assert_eq!(f.approvals_after.policy, "at_least");
    assert_eq!(f.approvals_after.n, "2");
    assert_eq!(f.approvals_after.timeout, "2d");
    assert_eq!(f.approvals_order, "after_gates");
    let checks = &f.gates_before.checks;
    assert_eq!(checks[0].kind, "prometheus");
    assert_eq!(checks[0].threshold, "< 0.01");
    assert_eq!(checks[0].on_inconclusive, "ask");
    assert_eq!(checks[2].kind, "extension");
    let with: serde_json::Value = serde_json::from_str(&checks[2].with).unwrap();
    assert_eq!(with, serde_json::json!({"service": "shop"}));
    let http = &f.gates_after.checks[0];
    assert_eq!(http.method, "POST");
    assert_eq!(http.headers, "Authorization: Bearer ${{ secrets.TOKEN }}\n");
}

/// A posted body: the stored form of stage `test` (no approvals, no
/// gates) as `key=value` pairs, then `extra`.
fn body(extra: &[(&str, &str)]) -> String {
    let f = form(&def(), "test");
    let mut pairs: Vec<(&str, String)> = vec![
        ("csrf", "x".into()),
        ("revision", f.revision.clone()),
        ("trigger", f.trigger.clone()),
        ("cron", f.cron.clone()),
        ("timezone", f.timezone.clone()),
        ("tasks", f.tasks.replace('\n', "\r\n")),
        ("parallel", f.parallel.clone()),
        ("policy", f.policy.clone()),
        ("approvals.order", "before_gates".into()),
    ];
    pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let enc = |t: &str| {
        percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn posted(extra: &[(&str, &str)]) -> Result<StageEdit, Box<FieldErrors>> {
    let def = def();
    let form = StageForm::from_body(&body(extra)).unwrap();
    parse_form(&def, 1, &form)
}

#[test]
fn approvals_and_gates_are_read_from_the_posted_fields() {
    let edit = posted(&[
        ("approvals.before.enabled", "on"),
        (
            "approvals.before.approvers",
            "alice,\r\ngroup:management  bob",
        ),
        ("approvals.before.policy", "at_least"),
        ("approvals.before.n", "2"),
        ("approvals.before.timeout", "7d"),
        ("approvals.before.fresh_sign_in", "15m"),
        ("approvals.before.exclude_authors", "on"),
        // Not enabled: typed values are not saved.
        ("approvals.after.approvers", "carol"),
        ("approvals.order", "after_gates"),
        ("gates.after.enabled", "on"),
        ("gates.after.delay", ""),
        ("gates.after.interval", "1m"),
        ("gates.after.checks.0.kind", "http"),
        ("gates.after.checks.0.name", " health "),
        (
            "gates.after.checks.0.url",
            " https://app.example.com/health ",
        ),
        ("gates.after.checks.0.method", "post"),
        (
            "gates.after.checks.0.headers",
            "Authorization: Bearer ${{ secrets.TOKEN }}\r\n\r\nX-Env:  prod\r\n",
        ),
        ("gates.after.checks.0.body", "{\"deep\": true}"),
        (
            "gates.after.checks.0.success",
            "status == 200 &&\r\nbody.ok",
        ),
        ("gates.after.checks.0.consecutive_successes", "3"),
        ("gates.after.checks.0.on_inconclusive", "ask"),
        // Fields of another kind are ignored.
        ("gates.after.checks.0.run", "./ignored.sh"),
        // A removed check is neither validated nor saved.
        ("gates.after.checks.1.kind", "prometheus"),
        ("gates.after.checks.1.threshold", "about 3"),
        ("gates.after.checks.1.remove", "on"),
        // The blank check that adds one.
        ("gates.after.checks.2.kind", "http"),
        ("gates.after.checks.2.on_inconclusive", "fail"),
        ("gates.after.checks.7.kind", "extension"),
        ("gates.after.checks.7.extension", "pagerduty"),
        ("gates.after.checks.7.with", "service: shop\r\nlevel: 2\r\n"),
        ("gates.after.checks.9.kind", "prometheus"),
        ("gates.after.checks.9.server", "http://prometheus:9090"),
        ("gates.after.checks.9.query", "sum(rate(errors[5m]))"),
        ("gates.after.checks.9.threshold", "<= 0.5"),
        ("gates.after.checks.11.kind", "command"),
        ("gates.after.checks.11.run", "./smoke.sh --fast"),
    ])
    .unwrap();
    let before = edit.approvals.before.unwrap();
    assert_eq!(
        before.approvers,
        vec![
            Approver::User("alice".into()),
            Approver::Group("management".into()),
            Approver::User("bob".into())
        ]
    );
    assert_eq!(before.policy, ApprovalMode::AtLeast(2));
    assert_eq!(before.timeout, Duration::from_days(7));
    assert_eq!(before.fresh_sign_in, Some(Duration::from_mins(15)));
    assert!(before.exclude_authors && !before.requester_can_approve);
    assert_eq!(edit.approvals.after, None);
    assert_eq!(edit.approvals.order, ApprovalOrder::AfterGates);
    assert_eq!(edit.gates.before, None);
    let gate = edit.gates.after.unwrap();
    assert_eq!(gate.delay, Duration::ZERO);
    assert_eq!(gate.interval, Duration::from_mins(1));
    assert_eq!(gate.timeout, defaults::GATE_TIMEOUT);
    assert_eq!(gate.checks.len(), 4, "{:?}", gate.checks);
    let http = &gate.checks[0];
    assert_eq!(http.name.as_deref(), Some("health"));
    assert_eq!(http.consecutive_successes, 3);
    assert_eq!(http.on_inconclusive, InconclusivePolicy::Ask);
    match &http.kind {
        CheckKind::Http {
            method,
            url,
            headers,
            body,
            timeout,
            success,
        } => {
            assert_eq!(method, "POST");
            assert_eq!(url, "https://app.example.com/health");
            assert_eq!(headers.len(), 2);
            assert_eq!(headers["Authorization"], "Bearer ${{ secrets.TOKEN }}");
            assert_eq!(headers["X-Env"], "prod");
            assert_eq!(body.as_deref(), Some("{\"deep\": true}"));
            assert_eq!(*timeout, defaults::HTTP_CHECK_TIMEOUT);
            assert_eq!(success, "status == 200 &&\nbody.ok");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        gate.checks[1].kind,
        CheckKind::Extension {
            name: "pagerduty".into(),
            with: serde_json::json!({"service": "shop", "level": 2})
        }
    );
    assert_eq!(
        gate.checks[2].kind,
        CheckKind::Prometheus {
            server: "http://prometheus:9090".into(),
            query: "sum(rate(errors[5m]))".into(),
            threshold: Threshold::parse("<= 0.5").unwrap()
        }
    );
    assert_eq!(
        gate.checks[3].kind,
        CheckKind::Command {
            run: "./smoke.sh --fast".into()
        }
    );
    // The http check's defaults; JSON works for `with` too.
    let edit = posted(&[
        ("gates.before.enabled", "on"),
        ("gates.before.checks.0.kind", "http"),
        ("gates.before.checks.0.url", "https://a.example.com/"),
        ("gates.before.checks.1.kind", "extension"),
        ("gates.before.checks.1.extension", "x"),
        ("gates.before.checks.1.with", "{\"a\": [1, 2]}"),
    ])
    .unwrap();
    let gate = edit.gates.before.unwrap();
    assert_eq!(gate.interval, defaults::GATE_INTERVAL);
    match &gate.checks[0].kind {
        CheckKind::Http {
            method, success, ..
        } => {
            assert_eq!(method, "GET");
            assert_eq!(success, defaults::HTTP_SUCCESS);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        gate.checks[1].kind,
        CheckKind::Extension {
            name: "x".into(),
            with: serde_json::json!({"a": [1, 2]})
        }
    );
}

#[test]
fn approval_fields_are_checked() {
    let errors = |extra: &[(&str, &str)]| {
        let mut all = vec![("approvals.before.enabled", "on")];
        all.extend_from_slice(extra);
        posted(&all).unwrap_err()
    };
    let e = errors(&[("approvals.before.approvers", "alice, team:ops")]);
    assert!(
        e.approvals_before
            .approvers
            .as_ref()
            .unwrap()
            .contains("team:ops"),
        "{e:?}"
    );
    let e = errors(&[("approvals.before.approvers", " ,\n ")]);
    assert!(
        e.approvals_before
            .approvers
            .as_ref()
            .unwrap()
            .contains("at least one")
    );
    let e = errors(&[("approvals.before.approvers", "alice, alice")]);
    assert!(
        e.approvals_before
            .approvers
            .as_ref()
            .unwrap()
            .contains("twice")
    );
    let e = errors(&[
        ("approvals.before.approvers", "alice"),
        ("approvals.before.policy", "at_least"),
        ("approvals.before.n", "0"),
        ("approvals.before.timeout", "7 days"),
        ("approvals.before.fresh_sign_in", "15"),
    ]);
    assert!(e.approvals_before.n.is_some(), "{e:?}");
    assert!(
        e.approvals_before
            .timeout
            .as_ref()
            .unwrap()
            .contains("7 days")
    );
    assert!(
        e.approvals_before
            .fresh_sign_in
            .as_ref()
            .unwrap()
            .contains("unit")
    );
    let e = errors(&[
        ("approvals.before.approvers", "alice, bob"),
        ("approvals.before.policy", "at_least"),
        ("approvals.before.n", "3"),
        ("approvals.before.timeout", "0s"),
    ]);
    assert!(
        e.approvals_before.n.as_ref().unwrap().contains("only 2"),
        "{e:?}"
    );
    assert!(e.approvals_before.timeout.as_ref().unwrap().contains("0s"));
    let ids: Vec<String> = e.summary().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["approvals-before-n", "approvals-before-timeout"]);
    // A group has any number of members: at least 3 of it is fine.
    let edit = posted(&[
        ("approvals.before.enabled", "on"),
        ("approvals.before.approvers", "group:management"),
        ("approvals.before.policy", "at_least"),
        ("approvals.before.n", "3"),
        ("approvals.before.timeout", ""),
    ])
    .unwrap();
    let before = edit.approvals.before.unwrap();
    assert_eq!(before.policy, ApprovalMode::AtLeast(3));
    assert_eq!(before.timeout, defaults::APPROVAL_TIMEOUT);
    let e = errors(&[
        ("approvals.before.approvers", "alice"),
        ("approvals.before.policy", "most"),
        ("approvals.order", "sometimes"),
    ]);
    assert!(e.approvals_before.policy.is_some() && e.approvals_order.is_some());
}

#[test]
fn check_fields_are_checked_next_to_them() {
    let errors = |extra: &[(&str, &str)]| {
        let mut all = vec![("gates.before.enabled", "on")];
        all.extend_from_slice(extra);
        posted(&all).unwrap_err()
    };
    // The expression's error with its position, next to `success`.
    let e = errors(&[
        ("gates.before.checks.0.kind", "http"),
        ("gates.before.checks.0.url", "https://a.example.com/"),
        ("gates.before.checks.0.success", "status =="),
    ]);
    let success = e.gates_before.check(0).success.unwrap();
    assert!(success.contains("line 1, column"), "{success}");
    let summary = e.summary();
    assert_eq!(summary[0].0, "gates-before-checks-0-success");
    assert!(summary[0].1.starts_with("Check 1: "), "{summary:?}");
    let e = errors(&[
        ("gates.before.interval", "0s"),
        ("gates.before.steady", "soon"),
        ("gates.before.checks.0.kind", "http"),
        ("gates.before.checks.0.url", "status.example.com"),
        ("gates.before.checks.0.method", "G E T"),
        (
            "gates.before.checks.0.headers",
            "Accept: text/plain\nno colon\nBad Name: x\naccept: twice\nX-T: ${{ secrets.1X }}",
        ),
        ("gates.before.checks.0.timeout", "10"),
        ("gates.before.checks.0.consecutive_successes", "0"),
        ("gates.before.checks.1.kind", "prometheus"),
        ("gates.before.checks.1.server", "http://p:9090"),
        ("gates.before.checks.1.threshold", "about 3"),
        ("gates.before.checks.2.kind", "command"),
        ("gates.before.checks.2.name", "empty command"),
        ("gates.before.checks.3.kind", "extension"),
        ("gates.before.checks.3.extension", "Pager Duty"),
        ("gates.before.checks.3.with", "{ unclosed"),
        ("gates.before.checks.4.kind", "telepathy"),
        ("gates.before.checks.4.name", "x"),
    ]);
    let g = &e.gates_before;
    assert!(g.interval.is_some() && g.steady.is_some());
    let c = g.check(0);
    assert!(c.url.unwrap().contains("http://"));
    assert!(c.method.is_some());
    let headers = c.headers.unwrap();
    for line in ["Line 2", "Line 3", "Line 4", "Line 5"] {
        assert!(headers.contains(line), "{headers}");
    }
    assert!(!headers.contains("Line 1"), "{headers}");
    assert!(c.timeout.is_some() && c.consecutive_successes.is_some());
    let c = g.check(1);
    assert!(c.query.is_some() && c.threshold.is_some() && c.server.is_none());
    assert!(g.check(2).run.is_some());
    let c = g.check(3);
    assert!(c.extension.unwrap().contains("Pager Duty"));
    assert!(c.with.is_some());
    assert!(g.check(4).kind.is_some());
    // Every check removed: the gate has none left.
    let e = errors(&[
        ("gates.before.checks.0.kind", "command"),
        ("gates.before.checks.0.run", "./x.sh"),
        ("gates.before.checks.0.remove", "on"),
    ]);
    assert!(e.gates_before.checks.is_some(), "{e:?}");
    // A gate that is not enabled is not checked (and not saved).
    let edit = posted(&[
        ("gates.before.checks.0.kind", "command"),
        ("gates.before.interval", "never"),
    ])
    .unwrap();
    assert_eq!(edit.gates, Gates::default());
}

#[test]
fn validation_errors_of_checks_land_on_the_form_field() {
    // The form left check 0 removed, so stored check 0 is form check 1.
    let form = StageForm::from_body(&body(&[
        ("gates.before.enabled", "on"),
        ("gates.before.checks.0.kind", "command"),
        ("gates.before.checks.0.run", "./gone.sh"),
        ("gates.before.checks.0.remove", "on"),
        ("gates.before.checks.1.kind", "http"),
        ("gates.before.checks.1.url", "https://a.example.com/"),
    ]))
    .unwrap();
    let def = def();
    let mut edit = parse_form(&def, 1, &form).unwrap();
    // What the definition's validation says about a bad expression.
    if let Some(CheckKind::Http { success, .. }) =
        edit.gates.before.as_mut().map(|g| &mut g.checks[0].kind)
    {
        *success = "status ==".into();
    }
    let Err(crate::engine::EngineError::Definition(errors)) = edit::apply_edit(&def, "test", edit)
    else {
        panic!("the expression is refused");
    };
    let placed = place_errors(&errors, 1, &form);
    let success = placed.gates_before.check(1).success.unwrap();
    assert!(success.contains("column"), "{success}");
    assert!(placed.general.is_empty(), "{:?}", placed.general);
}

#[test]
fn the_page_offers_one_blank_check_per_gate() {
    let def = everything();
    let mut f = form_of(def.stage("staging").unwrap(), 1);
    f.gates_before.for_page();
    f.gates_after.for_page();
    assert_eq!(f.gates_before.checks.len(), 4);
    assert!(f.gates_before.checks[3].new);
    assert!(!f.gates_before.checks[2].new);
    assert_eq!(
        f.gates_before.checks[3].key("url"),
        "gates.before.checks.3.url"
    );
    assert_eq!(
        f.gates_after.checks[0].id("on_inconclusive"),
        "gates-after-checks-0-on-inconclusive"
    );
    // Again (after an error): still one blank one.
    f.gates_before.for_page();
    assert_eq!(f.gates_before.checks.len(), 4);
}
