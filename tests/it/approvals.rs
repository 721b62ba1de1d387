//! Approvals over the API: a deployment to a stage with approvals waits
//! for its approvers; the policy, separation of duties, rejection with a
//! comment, defer, timeout, superseded approvals and concurrent decisions,
//! on both databases, with real builds of a real git repository.

use std::time::Duration;

use serde_json::{Value, json};
use slipway::domain::Role;
use slipway::storage;

use crate::deployments::{pipeline, repo};
use crate::helpers::{
    TestApp, build, deployment, each_backend, ended, get_json, import, member, post_json,
    wait_until,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// A pipeline with one manual stage `prod` whose approvals are `approvals`
/// (a YAML flow mapping) and whose queue policy is `queue`.
fn approval_pipeline(
    app: &TestApp,
    name: &str,
    approvals: &str,
    queue: &str,
) -> crate::git::TempRepo {
    let repo = repo();
    let stages = format!(
        r#"  - name: prod
    trigger: manual
    approvals: {approvals}
    queue: {queue}
    tasks: [ {{ shell: "true" }} ]
"#
    );
    import(app, &pipeline(name, &repo, &stages));
    repo
}

/// Deploys `version` to `prod` as the holder of `token`; returns the deployment id.
fn deploy(app: &TestApp, token: &str, name: &str, version: &str) -> i64 {
    let (status, v) = post_json(
        app,
        token,
        &format!("/api/v1/pipelines/{name}/stages/prod/deployments"),
        &json!({ "release": version }),
    );
    assert_eq!(status, 202, "[{}] {v}", app.backend);
    v["id"].as_i64().unwrap()
}

/// Waits until the approval of deployment `id` was requested; returns it.
fn approval_of(app: &TestApp, token: &str, id: i64) -> Value {
    wait_until(
        &format!("an approval of deployment #{id}"),
        DEADLINE,
        || {
            let d = deployment(app, token, id);
            d["approvals"].as_array().and_then(|a| a.first().cloned())
        },
    )
}

fn decide(app: &TestApp, token: &str, approval: i64, body: Value) -> (u16, Value) {
    post_json(app, token, &format!("/api/v1/approvals/{approval}"), &body)
}

fn inbox(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, v) = get_json(app, token, "/api/v1/approvals");
    assert_eq!(status, 200, "{v}");
    v["approvals"].as_array().unwrap().clone()
}

fn audit_actions(app: &TestApp, subject_prefix: &str) -> Vec<(String, String)> {
    let mut conn = app.conn();
    let mut rows = storage::list_audit(&mut conn, None, 5000).unwrap();
    rows.reverse();
    rows.into_iter()
        .filter(|r| r.subject.starts_with(subject_prefix))
        .map(|r| (r.action, r.actor))
        .collect()
}

#[test]
fn management_approves_and_the_deployment_goes_on() {
    each_backend(|app| {
        let _repo = approval_pipeline(
            app,
            "web",
            r#"{ before: { approvers: ["group:management"], policy: any } }"#,
            "{ parallel: 1, policy: sequence }",
        );
        // Dana deploys; she is in management too, but requested it.
        let dana = member(app, "dana", Role::Deployer, &["management"]);
        let maria = member(app, "maria", Role::Viewer, &["management"]);
        let vic = member(app, "vic", Role::Viewer, &[]);
        let v = build(app, &dana, "web");
        let id = deploy(app, &dana, "web", &v);
        let a = approval_of(app, &maria, id);
        assert_eq!(a["state"], "pending", "{a}");
        assert_eq!(a["approvers"], json!(["group:management"]));
        assert_eq!(a["requested_by"], "dana");
        assert_eq!(deployment(app, &maria, id)["state"], "waiting_for_approval");
        // The release's commits are listed (the repository's first commit).
        let commits = a["commits"].as_array().unwrap();
        assert_eq!(commits.len(), 1, "{a}");
        assert!(
            commits[0]["author"]
                .as_str()
                .unwrap()
                .contains("mara@example.com")
        );
        let approval = a["id"].as_i64().unwrap();

        // Maria's inbox has it; Vic's does not.
        let listed = inbox(app, &maria);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["release"], v);
        assert_eq!(listed[0]["stage"], "prod");
        assert!(inbox(app, &vic).is_empty());

        // Not an approver → 403; the requester may not approve → 403.
        let (status, body) = decide(app, &vic, approval, json!({"decision": "approve"}));
        assert_eq!(status, 403, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not an approver"),
            "{body}"
        );
        let (status, body) = decide(app, &dana, approval, json!({"decision": "approve"}));
        assert_eq!(status, 403, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("requested this deployment"),
            "{body}"
        );
        // A rejection needs a comment; a decision must be one of three.
        let (status, body) = decide(app, &maria, approval, json!({"decision": "reject"}));
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("comment"),
            "{body}"
        );
        let (status, _) = decide(app, &maria, approval, json!({"decision": "maybe"}));
        assert_eq!(status, 400);
        assert_eq!(deployment(app, &maria, id)["state"], "waiting_for_approval");

        // Maria approves: the deployment runs and succeeds.
        let (status, body) = decide(app, &maria, approval, json!({"decision": "approve"}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "approved");
        assert_eq!(body["decisions"][0]["user"], "maria");
        let d = ended(app, &maria, id);
        assert_eq!(d["state"], "succeeded", "{d}");
        assert_eq!(d["approvals"][0]["state"], "approved");
        // Decisions are immutable: a second one is refused.
        let (status, _) = decide(
            app,
            &maria,
            approval,
            json!({"decision": "reject", "comment": "no"}),
        );
        assert_eq!(status, 409);
        assert!(inbox(app, &maria).is_empty());

        let actions = audit_actions(app, "approval:web#");
        assert_eq!(
            actions,
            vec![
                ("approval.request".to_string(), "slipway".to_string()),
                ("approval.approve".to_string(), "maria".to_string()),
            ]
        );
    });
}

#[test]
fn a_rejection_with_a_comment_rejects_the_deployment() {
    each_backend(|app| {
        let _repo = approval_pipeline(
            app,
            "shop",
            r#"{ before: { approvers: ["bob", "group:qa"], policy: all } }"#,
            "{ parallel: 1, policy: sequence }",
        );
        let dana = member(app, "dana", Role::Deployer, &[]);
        let bob = member(app, "bob", Role::Viewer, &[]);
        let quinn = member(app, "quinn", Role::Viewer, &["qa"]);
        let v = build(app, &dana, "shop");
        let id = deploy(app, &dana, "shop", &v);
        let approval = approval_of(app, &bob, id)["id"].as_i64().unwrap();
        // `all`: Bob's approval alone is not enough.
        let (status, body) = decide(app, &bob, approval, json!({"decision": "approve"}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "pending");
        assert_eq!(body["needed"], "approval from group:qa");
        // Quinn rejects with a reason.
        let (status, body) = decide(
            app,
            &quinn,
            approval,
            json!({"decision": "reject", "comment": "the checkout test fails"}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "rejected");
        let d = ended(app, &bob, id);
        assert_eq!(d["state"], "rejected", "{d}");
        let error = d["error"].as_str().unwrap_or_default().to_string();
        let reason = d["approvals"][0]["reason"].as_str().unwrap().to_string();
        assert!(
            reason.contains("rejected by quinn: the checkout test fails"),
            "{reason} / {error}"
        );
    });
}

#[test]
fn two_approvers_at_once_give_one_outcome() {
    each_backend(|app| {
        let _repo = approval_pipeline(
            app,
            "race",
            r#"{ before: { approvers: ["group:management"], policy: any } }"#,
            "{ parallel: 1, policy: sequence }",
        );
        let dana = member(app, "dana", Role::Deployer, &[]);
        let tokens: Vec<String> = (0..4)
            .map(|n| member(app, &format!("boss{n}"), Role::Viewer, &["management"]))
            .collect();
        let v = build(app, &dana, "race");
        let id = deploy(app, &dana, "race", &v);
        let approval = approval_of(app, &dana, id)["id"].as_i64().unwrap();
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let handles: Vec<_> = tokens
                .iter()
                .map(|t| {
                    s.spawn(move || decide(app, t, approval, json!({"decision": "approve"})).0)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Exactly one decision landed; the others found it closed.
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 409).count(),
            3,
            "{statuses:?}"
        );
        let d = ended(app, &dana, id);
        assert_eq!(d["state"], "succeeded", "{d}");
        assert_eq!(d["approvals"][0]["decisions"].as_array().unwrap().len(), 1);
        let approves = audit_actions(app, "approval:race#")
            .into_iter()
            .filter(|(a, _)| a == "approval.approve")
            .count();
        assert_eq!(approves, 1);
        // The deployment ran once.
        let starts = audit_actions(app, "deployment:race#")
            .into_iter()
            .filter(|(a, _)| a == "deployment.start")
            .count();
        assert_eq!(starts, 1);
    });
}

#[test]
fn an_approval_nobody_decides_times_out_and_rejects() {
    each_backend(|app| {
        let _repo = approval_pipeline(
            app,
            "slow",
            r#"{ before: { approvers: ["group:management"], timeout: 2s } }"#,
            "{ parallel: 1, policy: sequence }",
        );
        let dana = member(app, "dana", Role::Deployer, &[]);
        let v = build(app, &dana, "slow");
        let id = deploy(app, &dana, "slow", &v);
        let d = ended(app, &dana, id);
        assert_eq!(d["state"], "rejected", "{d}");
        assert_eq!(d["approvals"][0]["state"], "timed_out", "{d}");
        assert_eq!(d["approvals"][0]["reason"], "timed out");
        assert!(d["error"].as_str().unwrap().contains("timed out"), "{d}");
        let actions = audit_actions(app, "approval:slow#");
        assert!(
            actions.contains(&("approval.timeout".to_string(), "slipway".to_string())),
            "{actions:?}"
        );
    });
}

#[test]
fn a_superseded_deployment_closes_its_approval_as_superseded_and_defer_hides_it() {
    each_backend(|app| {
        let _repo = approval_pipeline(
            app,
            "newer",
            r#"{ before: { approvers: ["group:management"] } }"#,
            "{ parallel: 1, policy: latest_only }",
        );
        let dana = member(app, "dana", Role::Deployer, &[]);
        let maria = member(app, "maria", Role::Viewer, &["management"]);
        let v1 = build(app, &dana, "newer");
        let first = deploy(app, &dana, "newer", &v1);
        let a1 = approval_of(app, &maria, first)["id"].as_i64().unwrap();

        // Defer needs a time in the future, before the deadline.
        let (status, body) = decide(app, &maria, a1, json!({"decision": "defer"}));
        assert_eq!(status, 422, "{body}");
        let (status, body) = decide(
            app,
            &maria,
            a1,
            json!({"decision": "defer", "until": "2001-01-01T00:00:00Z"}),
        );
        assert_eq!(status, 422, "{body}");
        let until = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
        let (status, body) = decide(
            app,
            &maria,
            a1,
            json!({"decision": "defer", "until": until}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "pending");
        let listed = inbox(app, &maria);
        assert_eq!(listed.len(), 1);
        assert!(listed[0]["deferred_until"].is_string(), "{listed:?}");

        // A newer release takes its place: the older approval closes as superseded.
        let v2 = build(app, &dana, "newer");
        let second = deploy(app, &dana, "newer", &v2);
        let a2 = approval_of(app, &maria, second)["id"].as_i64().unwrap();
        let old = deployment(app, &maria, first);
        assert_eq!(old["state"], "superseded", "{old}");
        assert_eq!(old["approvals"][0]["state"], "superseded", "{old}");
        let listed = inbox(app, &maria);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["id"], a2);
        // Deciding the closed approval is a conflict, not a rejection.
        let (status, _) = decide(app, &maria, a1, json!({"decision": "approve"}));
        assert_eq!(status, 409);
        assert_eq!(deployment(app, &maria, first)["state"], "superseded");
    });
}

#[test]
fn commit_authors_may_not_approve_when_the_stage_excludes_them() {
    each_backend(|app| {
        let _repo = approval_pipeline(
            app,
            "duties",
            r#"{ before: { approvers: ["group:management"], exclude_authors: true, requester_can_approve: true } }"#,
            "{ parallel: 1, policy: sequence }",
        );
        // The test repository's commits are by "Mara Test <mara@example.com>".
        let mara = member(app, "mara", Role::Deployer, &["management"]);
        let li = member(app, "li", Role::Viewer, &["management"]);
        let v = build(app, &mara, "duties");
        let id = deploy(app, &mara, "duties", &v);
        let approval = approval_of(app, &li, id)["id"].as_i64().unwrap();
        let (status, body) = decide(app, &mara, approval, json!({"decision": "approve"}));
        assert_eq!(status, 403, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("wrote a commit"),
            "{body}"
        );
        let (status, body) = decide(app, &li, approval, json!({"decision": "approve"}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(ended(app, &li, id)["state"], "succeeded");
    });
}

#[test]
fn approvals_after_the_stage_and_their_notifications() {
    each_backend(|app| {
        let receiver = crate::notifications::Receiver::start(|_| 200);
        let repo = repo();
        let stages = r#"  - name: prod
    trigger: manual
    approvals: { after: { approvers: [maria] } }
    tasks: [ { shell: "true" } ]
  - name: smoke
    trigger: { after: prod }
    tasks: [ { shell: "true" } ]
"#;
        let yaml = format!(
            "{}notifications:\n  - name: chat\n    url: \"{}\"\n",
            pipeline("after", &repo, stages),
            receiver.url
        );
        import(app, &yaml);
        let dana = member(app, "dana", Role::Deployer, &[]);
        let maria = member(app, "maria", Role::Viewer, &[]);
        let v = build(app, &dana, "after");
        let id = deploy(app, &dana, "after", &v);
        // The tasks run first; then the deployment waits for Maria.
        let a = approval_of(app, &maria, id);
        assert_eq!(a["phase"], "after", "{a}");
        let d = deployment(app, &maria, id);
        assert_eq!(d["state"], "waiting_for_approval", "{d}");
        assert_eq!(d["tasks"][0]["state"], "succeeded", "{d}");
        let requested = receiver.nth(1);
        assert_eq!(
            requested.header("X-Slipway-Event"),
            Some("approval_requested")
        );
        let body = requested.json();
        assert_eq!(body["approval_id"], a["id"]);
        assert_eq!(body["release"], v.as_str());
        assert_eq!(body["approvers"], json!(["maria"]));
        assert!(
            body["url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/approvals/{}", a["id"])),
            "{body}"
        );

        let (status, body) = decide(
            app,
            &maria,
            a["id"].as_i64().unwrap(),
            json!({"decision": "approve"}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(ended(app, &maria, id)["state"], "succeeded");
        // Its success starts the stage after it.
        let smoke = crate::helpers::deployment_to(app, &maria, "after", &v, "smoke");
        assert_eq!(ended(app, &maria, smoke)["state"], "succeeded");
        let decided = receiver.nth(2);
        assert_eq!(decided.header("X-Slipway-Event"), Some("approval_decided"));
        assert_eq!(decided.json()["outcome"], "approved");
        assert_eq!(decided.json()["decided_by"], "maria");
    });
}

#[test]
fn a_canceled_deployment_closes_its_approval_as_canceled() {
    each_backend(|app| {
        let _repo = approval_pipeline(
            app,
            "stop",
            r#"{ before: { approvers: ["group:management"] } }"#,
            "{ parallel: 1, policy: sequence }",
        );
        let dana = member(app, "dana", Role::Deployer, &[]);
        let maria = member(app, "maria", Role::Viewer, &["management"]);
        let v = build(app, &dana, "stop");
        let id = deploy(app, &dana, "stop", &v);
        let approval = approval_of(app, &maria, id)["id"].as_i64().unwrap();
        let (status, body) = post_json(
            app,
            &dana,
            &format!("/api/v1/deployments/{id}/cancel"),
            &json!({}),
        );
        assert_eq!(status, 200, "{body}");
        let d = deployment(app, &maria, id);
        assert_eq!(d["state"], "canceled", "{d}");
        assert_eq!(d["approvals"][0]["state"], "canceled", "{d}");
        assert_eq!(d["approvals"][0]["closed_by"], "dana");
        assert!(inbox(app, &maria).is_empty());
        let (status, _) = decide(app, &maria, approval, json!({"decision": "approve"}));
        assert_eq!(status, 409);
    });
}

/// A pipeline whose `prod` stage has an approval by Maria and a gate that
/// passes at its first sample, in the given order.
fn gated_pipeline(app: &TestApp, name: &str, order: &str) -> crate::git::TempRepo {
    let repo = repo();
    let stages = format!(
        r#"  - name: prod
    trigger: manual
    approvals: {{ order: {order}, before: {{ approvers: [maria] }} }}
    gates:
      before: {{ delay: 0s, interval: 1s, steady: 0s, timeout: 30s, checks: [ {{ command: {{ run: "true" }} }} ] }}
    tasks: [ {{ shell: "true" }} ]
"#
    );
    import(app, &pipeline(name, &repo, &stages));
    repo
}

#[test]
fn approvals_and_gates_take_turns_in_the_configured_order() {
    each_backend(|app| {
        let dana = member(app, "dana", Role::Deployer, &[]);
        let maria = member(app, "maria", Role::Viewer, &[]);

        // Default: approval first, then the gate, then the tasks.
        let _first = gated_pipeline(app, "approve-first", "before_gates");
        let v = build(app, &dana, "approve-first");
        let id = deploy(app, &dana, "approve-first", &v);
        let a = approval_of(app, &maria, id);
        assert_eq!(
            deployment(app, &maria, id)["gates"],
            json!([]),
            "no gate before approval"
        );
        let (status, body) = decide(
            app,
            &maria,
            a["id"].as_i64().unwrap(),
            json!({"decision": "approve"}),
        );
        assert_eq!(status, 200, "{body}");
        let d = ended(app, &maria, id);
        assert_eq!(d["state"], "succeeded", "{d}");
        assert_eq!(d["gates"][0]["state"], "passed", "{d}");

        // after_gates: the gate passes first, then Maria is asked.
        let _second = gated_pipeline(app, "gates-first", "after_gates");
        let v = build(app, &dana, "gates-first");
        let id = deploy(app, &dana, "gates-first", &v);
        let a = approval_of(app, &maria, id);
        let d = deployment(app, &maria, id);
        assert_eq!(d["state"], "waiting_for_approval", "{d}");
        assert_eq!(
            d["gates"][0]["state"], "passed",
            "gate before approval: {d}"
        );
        assert_eq!(a["phase"], "before");
        let (status, body) = decide(
            app,
            &maria,
            a["id"].as_i64().unwrap(),
            json!({"decision": "approve"}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(ended(app, &maria, id)["state"], "succeeded");
    });
}

#[test]
fn an_approval_about_to_time_out_is_announced_then_times_out() {
    each_backend(|app| {
        let receiver = crate::notifications::Receiver::start(|_| 200);
        let repo = repo();
        // 5 s before the deadline (a tenth of the timeout, at least 5 s)
        // the warning goes out; the dispatcher looks at least every 2 s.
        let stages = r#"  - name: prod
    trigger: manual
    approvals: { before: { approvers: ["group:management"], timeout: 20s } }
    tasks: [ { shell: "true" } ]
"#;
        let yaml = format!(
            "{}notifications:\n  - name: chat\n    url: \"{}\"\n",
            pipeline("expiring", &repo, stages),
            receiver.url
        );
        import(app, &yaml);
        let dana = member(app, "dana", Role::Deployer, &[]);
        let v = build(app, &dana, "expiring");
        let id = deploy(app, &dana, "expiring", &v);
        let events: Vec<String> = (1..=3)
            .map(|n| {
                receiver
                    .nth(n)
                    .header("X-Slipway-Event")
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(
            events,
            [
                "approval_requested",
                "approval_expiring",
                "approval_decided"
            ]
        );
        let decided = receiver.nth(3).json();
        assert_eq!(decided["outcome"], "timed_out", "{decided}");
        assert_eq!(decided["decided_by"], "slipway");
        assert_eq!(ended(app, &dana, id)["state"], "rejected");
    });
}
