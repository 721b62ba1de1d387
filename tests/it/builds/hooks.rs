//! `POST /hooks/{provider}/{pipeline}` with deliveries shaped as GitHub,
//! GitLab and Gitea send them (from their documentation), and the generic
//! shape; signed, unsigned, replayed, oversized and malformed.

use reqwest::blocking::Response;
use serde_json::{Value, json};
use slipway::domain::Role;
use slipway::domain::webhook::sign;

use crate::git::{TempRepo, git_repo};
use crate::helpers::{
    TestApp, each_backend, finished, get_json, import, json as parse, pipeline_yaml, queue,
};

const SECRET: &str = "It's a Secret to Everybody";

fn hooked_pipeline(app: &TestApp, name: &str, repo: &TempRepo, extra_source: &str) {
    let yaml = pipeline_yaml(
        name,
        &repo.url(),
        "1.0.{build}",
        "  tasks: [ { shell: \"git log -1 --format=%s\" } ]\n  artifacts: []",
    )
    .replace(
        "branch: main }",
        &format!("branch: main, webhook_secret: \"${{{{ secrets.HOOK }}}}\"{extra_source} }}"),
    );
    import(app, &yaml);
    app.set_secret(name, "HOOK", SECRET);
}

fn github_push(sha: &str, branch: &str) -> String {
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": sha,
        "created": false,
        "deleted": false,
        "forced": false,
        "base_ref": null,
        "compare": "https://github.com/tailspin/space-game-web/compare/6113728f27ae...0d1a26e67d8f",
        "commits": [{
            "id": sha,
            "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
            "distinct": true,
            "message": "Fix the score board",
            "timestamp": "2026-11-26T10:12:00+01:00",
            "url": format!("https://github.com/tailspin/space-game-web/commit/{sha}"),
            "author": {"name": "Mara Lind", "email": "mara@tailspin.example", "username": "mara"},
            "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
            "added": [], "removed": [], "modified": ["README"]
        }],
        "head_commit": {
            "id": sha,
            "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
            "distinct": true,
            "message": "Fix the score board",
            "timestamp": "2026-11-26T10:12:00+01:00",
            "url": format!("https://github.com/tailspin/space-game-web/commit/{sha}"),
            "author": {"name": "Mara Lind", "email": "mara@tailspin.example", "username": "mara"},
            "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
            "added": [], "removed": [], "modified": ["README"]
        },
        "repository": {
            "id": 35129377,
            "name": "space-game-web",
            "full_name": "tailspin/space-game-web",
            "private": false,
            "clone_url": "https://github.com/tailspin/space-game-web.git",
            "default_branch": "main"
        },
        "pusher": {"name": "mara", "email": "mara@tailspin.example"},
        "sender": {"login": "mara", "id": 6752317, "type": "User"}
    })
    .to_string()
}

fn gitlab_push(sha: &str, branch: &str) -> String {
    json!({
        "object_kind": "push",
        "event_name": "push",
        "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
        "after": sha,
        "ref": format!("refs/heads/{branch}"),
        "ref_protected": true,
        "checkout_sha": sha,
        "message": null,
        "user_id": 4,
        "user_name": "John Smith",
        "user_username": "jsmith",
        "user_email": "john@example.com",
        "user_avatar": "https://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=8://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=80",
        "project_id": 15,
        "project": {
            "id": 15,
            "name": "Space Game",
            "web_url": "https://gitlab.example.com/tailspin/space-game-web",
            "git_http_url": "https://gitlab.example.com/tailspin/space-game-web.git",
            "namespace": "Tailspin",
            "path_with_namespace": "tailspin/space-game-web",
            "default_branch": "main"
        },
        "commits": [{
            "id": sha,
            "message": "Update Catalan translation to e38cb41.\n\nSee https://gitlab.com/gitlab-org/gitlab for more information",
            "title": "Update Catalan translation to e38cb41.",
            "timestamp": "2011-12-12T14:27:31+02:00",
            "url": format!("https://gitlab.example.com/tailspin/space-game-web/-/commit/{sha}"),
            "author": {"name": "Jordi Mallach", "email": "jordi@softcatala.org"},
            "added": ["CHANGELOG"],
            "modified": ["app/controller/application.rb"],
            "removed": []
        }],
        "total_commits_count": 1,
        "push_options": {},
        "repository": {
            "name": "Space Game",
            "url": "git@gitlab.example.com:tailspin/space-game-web.git",
            "homepage": "https://gitlab.example.com/tailspin/space-game-web",
            "visibility_level": 0
        }
    })
    .to_string()
}

fn gitea_push(sha: &str, branch: &str) -> String {
    let commit = json!({
        "id": sha,
        "message": "Make the ship faster\n",
        "url": format!("https://gitea.example.com/tailspin/space-game-web/commit/{sha}"),
        "author": {"name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
        "committer": {"name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
        "verification": null,
        "timestamp": "2026-11-26T10:12:00Z",
        "added": [], "removed": [], "modified": ["README"]
    });
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "28e1879d029cb852e4844d9c718537df08844e03",
        "after": sha,
        "compare_url": "https://gitea.example.com/tailspin/space-game-web/compare/28e1879d029c...bffeb74224ec",
        "commits": [commit.clone()],
        "total_commits": 1,
        "head_commit": commit,
        "repository": {
            "id": 140,
            "owner": {"id": 1, "login": "tailspin", "full_name": "", "email": "", "username": "tailspin"},
            "name": "space-game-web",
            "full_name": "tailspin/space-game-web",
            "private": false,
            "clone_url": "https://gitea.example.com/tailspin/space-game-web.git",
            "default_branch": "main"
        },
        "pusher": {"id": 1, "login": "gitea", "full_name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
        "sender": {"id": 1, "login": "gitea", "full_name": "Gitea", "email": "someone@gitea.io", "username": "gitea"}
    })
    .to_string()
}

fn generic_push(sha: &str, branch: &str) -> String {
    json!({"ref": format!("refs/heads/{branch}"), "after": sha, "message": "Scripted push", "author": "CI <ci@example.com>"}).to_string()
}

/// Sends a delivery as `provider` does, signed with `secret` (unsigned when `None`).
fn deliver(
    app: &TestApp,
    provider: &str,
    pipeline: &str,
    event: &str,
    delivery: &str,
    body: &str,
    secret: Option<&str>,
) -> Response {
    let mut req = app
        .client
        .post(app.url(&format!("/hooks/{provider}/{pipeline}")))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    let signature = secret.map(|s| sign(s.as_bytes(), body.as_bytes()));
    req = match provider {
        "github" => {
            req = req
                .header("X-GitHub-Event", event)
                .header("X-GitHub-Delivery", delivery)
                .header("X-GitHub-Hook-ID", "292430182")
                .header("User-Agent", "GitHub-Hookshot/044aadd");
            match signature {
                Some(sig) => req.header("X-Hub-Signature-256", sig),
                None => req,
            }
        }
        "gitlab" => {
            req = req
                .header("X-Gitlab-Event", event)
                .header("X-Gitlab-Event-UUID", delivery)
                .header("X-Gitlab-Instance", "https://gitlab.example.com")
                .header("User-Agent", "GitLab/17.6.0");
            match secret {
                Some(s) => req.header("X-Gitlab-Token", s),
                None => req,
            }
        }
        "gitea" => {
            req = req
                .header("X-Gitea-Event", event)
                .header("X-Gitea-Delivery", delivery)
                .header("X-GitHub-Event", event)
                .header("X-GitHub-Delivery", delivery);
            match signature {
                Some(sig) => req.header(
                    "X-Gitea-Signature",
                    sig.trim_start_matches("sha256=").to_string(),
                ),
                None => req,
            }
        }
        _ => {
            req = req
                .header("X-Slipway-Event", event)
                .header("X-Slipway-Delivery", delivery);
            match signature {
                Some(sig) => req.header("X-Slipway-Signature", sig),
                None => req,
            }
        }
    };
    req.send().unwrap()
}

fn builds_of(app: &TestApp, token: &str, pipeline: &str) -> Vec<Value> {
    let (status, v) = get_json(app, token, &format!("/api/v1/pipelines/{pipeline}/builds"));
    assert_eq!(status, 200, "{v}");
    v["builds"].as_array().unwrap().clone()
}

fn deliveries(app: &TestApp) -> i64 {
    use diesel::prelude::*;
    use slipway::storage::schema::webhook_deliveries;
    let mut conn = app.conn();
    webhook_deliveries::table
        .count()
        .get_result(&mut *conn)
        .unwrap()
}

#[test]
fn signed_pushes_of_every_provider_queue_builds() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        hooked_pipeline(app, "hooked", &repo, "");
        let viewer = app.token("vic", Role::Viewer);
        let cases = [
            (
                "github",
                "push",
                github_push as fn(&str, &str) -> String,
                "mara via github",
            ),
            ("gitlab", "Push Hook", gitlab_push, "jsmith via gitlab"),
            ("gitea", "push", gitea_push, "gitea via gitea"),
            ("generic", "push", generic_push, "generic"),
        ];
        for (i, (provider, event, payload, by)) in cases.into_iter().enumerate() {
            let sha = repo.commit(
                &[("README", &format!("change {i}\n"))],
                &format!("change {i} via {provider}"),
            );
            let res = deliver(
                app,
                provider,
                "hooked",
                event,
                &format!("{provider}-1"),
                &payload(&sha, "main"),
                Some(SECRET),
            );
            let (status, v) = parse(res);
            assert_eq!(status, 202, "[{}] {provider}: {v}", app.backend);
            assert_eq!(v["status"], "queued");
            assert_eq!(v["build"]["commit"], sha.as_str());
            assert_eq!(v["build"]["branch"], "main");
            assert_eq!(v["build"]["trigger"], format!("webhook:{provider}"));
            assert_eq!(v["build"]["requested_by"], by);
            let number = v["build"]["number"].as_i64().unwrap();
            let b = finished(app, &viewer, "hooked", number);
            assert_eq!(b["state"], "succeeded", "{b}");
            assert_eq!(b["message"], format!("change {i} via {provider}"));
        }
        assert_eq!(builds_of(app, &viewer, "hooked").len(), 4);
    });
}

#[test]
fn unsigned_or_badly_signed_deliveries_are_refused_and_change_nothing() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        hooked_pipeline(app, "hooked", &repo, "");
        let sha = repo.head();
        for provider in ["github", "gitlab", "gitea", "generic"] {
            let body = generic_push(&sha, "main");
            for secret in [None, Some("wrong secret")] {
                let (status, v) = parse(deliver(
                    app, provider, "hooked", "push", "d-1", &body, secret,
                ));
                assert_eq!(status, 401, "{provider} {secret:?}: {v}");
                assert_eq!(v["error"]["code"], "unauthorized");
            }
        }
        // A body changed after signing.
        let body = github_push(&sha, "main");
        let sig = sign(SECRET.as_bytes(), body.as_bytes());
        let res = app
            .client
            .post(app.url("/hooks/github/hooked"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "d-2")
            .header("X-Hub-Signature-256", sig)
            .body(body.replace("main", "evil"))
            .send()
            .unwrap();
        assert_eq!(res.status(), 401);

        // Without a configured secret nothing is accepted, even signed.
        import(
            app,
            &pipeline_yaml(
                "open",
                &repo.url(),
                "1.0.{build}",
                "  tasks: [ { shell: \"true\" } ]\n  artifacts: []",
            ),
        );
        let (status, v) = parse(deliver(
            app,
            "github",
            "open",
            "push",
            "d-3",
            &body,
            Some(SECRET),
        ));
        assert_eq!(status, 401, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("webhook secret not configured"),
            "{v}"
        );
        // A secret referenced but never set: same.
        let yaml = pipeline_yaml(
            "unset",
            &repo.url(),
            "1.0.{build}",
            "  tasks: [ { shell: \"true\" } ]\n  artifacts: []",
        )
        .replace(
            "branch: main }",
            "branch: main, webhook_secret: \"${{ secrets.NOPE }}\" }",
        );
        import(app, &yaml);
        let (status, v) = parse(deliver(
            app,
            "github",
            "unset",
            "push",
            "d-4",
            &body,
            Some(""),
        ));
        assert_eq!(status, 401, "{v}");

        let viewer = app.token("vic", Role::Viewer);
        for p in ["hooked", "open", "unset"] {
            assert!(builds_of(app, &viewer, p).is_empty());
        }
        assert_eq!(deliveries(app), 0);
    });
}

#[test]
fn a_replayed_delivery_is_processed_once() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        hooked_pipeline(app, "hooked", &repo, "");
        let body = github_push(&repo.head(), "main");
        let (status, _) = parse(deliver(
            app,
            "github",
            "hooked",
            "push",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            &body,
            Some(SECRET),
        ));
        assert_eq!(status, 202);
        for _ in 0..2 {
            let (status, v) = parse(deliver(
                app,
                "github",
                "hooked",
                "push",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                &body,
                Some(SECRET),
            ));
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["status"], "duplicate");
        }
        let viewer = app.token("vic", Role::Viewer);
        assert_eq!(builds_of(app, &viewer, "hooked").len(), 1);
        // The same signed body under another delivery id (the id header is
        // not signed) or on another provider's path whose signature it
        // also passes is a replay: nothing builds.
        let (status, v) = parse(deliver(
            app,
            "github",
            "hooked",
            "push",
            "another-id",
            &body,
            Some(SECRET),
        ));
        assert_eq!(
            (status, v["status"].as_str()),
            (200, Some("duplicate")),
            "{v}"
        );
        let (status, v) = parse(deliver(
            app,
            "gitea",
            "hooked",
            "push",
            "gitea-id",
            &body,
            Some(SECRET),
        ));
        assert_eq!(
            (status, v["status"].as_str()),
            (200, Some("duplicate")),
            "{v}"
        );
        assert_eq!(builds_of(app, &viewer, "hooked").len(), 1);
    });
}

#[test]
fn pings_deletions_filtered_branches_and_other_events_are_ignored() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        hooked_pipeline(app, "hooked", &repo, ", branches: { include: [main] }");
        let ping = json!({"zen": "Design for failure.", "hook_id": 292430182, "hook": {"type": "Repository", "events": ["push"]}}).to_string();
        let (status, v) = parse(deliver(
            app,
            "github",
            "hooked",
            "ping",
            "p-1",
            &ping,
            Some(SECRET),
        ));
        assert_eq!(
            (status, v["status"].as_str()),
            (200, Some("ignored")),
            "{v}"
        );
        let (status, v) = parse(deliver(
            app,
            "generic",
            "hooked",
            "ping",
            "p-2",
            "{}",
            Some(SECRET),
        ));
        assert_eq!(
            (status, v["status"].as_str()),
            (200, Some("ignored")),
            "{v}"
        );
        let (status, v) = parse(deliver(
            app,
            "github",
            "hooked",
            "issues",
            "p-3",
            "{\"action\": \"opened\"}",
            Some(SECRET),
        ));
        assert_eq!(
            (status, v["status"].as_str()),
            (200, Some("ignored")),
            "{v}"
        );
        // A deleted branch.
        let deleted =
            github_push(&"0".repeat(40), "main").replace("\"deleted\":false", "\"deleted\":true");
        let (status, v) = parse(deliver(
            app,
            "github",
            "hooked",
            "push",
            "p-4",
            &deleted,
            Some(SECRET),
        ));
        assert_eq!(
            (status, v["status"].as_str()),
            (200, Some("ignored")),
            "{v}"
        );
        // A branch the filter excludes.
        let feature = repo.commit_on("feature/x", &[("f", "f\n")], "feature");
        let (status, v) = parse(deliver(
            app,
            "gitlab",
            "hooked",
            "Push Hook",
            "p-5",
            &gitlab_push(&feature, "feature/x"),
            Some(SECRET),
        ));
        assert_eq!(
            (status, v["status"].as_str()),
            (200, Some("ignored")),
            "{v}"
        );
        assert!(v["reason"].as_str().unwrap().contains("feature/x"), "{v}");
        let viewer = app.token("vic", Role::Viewer);
        assert!(builds_of(app, &viewer, "hooked").is_empty());
    });
}

#[test]
fn oversized_malformed_and_misaddressed_deliveries_are_refused() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        hooked_pipeline(app, "hooked", &repo, "");
        let big = format!(
            "{{\"ref\": \"refs/heads/main\", \"padding\": \"{}\"}}",
            "x".repeat(1 << 20)
        );
        let (status, v) = parse(deliver(
            app,
            "github",
            "hooked",
            "push",
            "b-1",
            &big,
            Some(SECRET),
        ));
        assert_eq!(status, 413, "{v}");
        assert_eq!(v["error"]["code"], "payload_too_large");
        let (status, v) = parse(deliver(
            app,
            "github",
            "hooked",
            "push",
            "b-2",
            "{\"ref\": ",
            Some(SECRET),
        ));
        assert_eq!(status, 400, "{v}");
        let (status, v) = parse(deliver(
            app,
            "generic",
            "hooked",
            "push",
            "b-3",
            "[1, 2, 3]",
            Some(SECRET),
        ));
        assert_eq!(status, 400, "{v}");
        let (status, v) = parse(deliver(
            app,
            "bitbucket",
            "hooked",
            "push",
            "b-4",
            "{}",
            Some(SECRET),
        ));
        assert_eq!(status, 404, "{v}");
        let (status, v) = parse(deliver(
            app,
            "github",
            "nope",
            "push",
            "b-5",
            "{}",
            Some(SECRET),
        ));
        assert_eq!(status, 404, "{v}");
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(deliveries(app), 0);
    });
}

#[test]
fn two_pushes_in_quick_succession_both_build_in_order() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        hooked_pipeline(app, "hooked", &repo, "");
        let first = repo.commit(&[("README", "one\n")], "first push");
        let second = repo.commit(&[("README", "two\n")], "second push");
        let (s1, v1) = parse(deliver(
            app,
            "github",
            "hooked",
            "push",
            "q-1",
            &github_push(&first, "main"),
            Some(SECRET),
        ));
        let (s2, v2) = parse(deliver(
            app,
            "github",
            "hooked",
            "push",
            "q-2",
            &github_push(&second, "main"),
            Some(SECRET),
        ));
        assert_eq!((s1, s2), (202, 202), "{v1} {v2}");
        let viewer = app.token("vic", Role::Viewer);
        let b1 = finished(app, &viewer, "hooked", 1);
        let b2 = finished(app, &viewer, "hooked", 2);
        assert_eq!(
            (b1["commit"].as_str(), b2["commit"].as_str()),
            (Some(first.as_str()), Some(second.as_str()))
        );
        assert_eq!(
            (b1["release"].as_str(), b2["release"].as_str()),
            (Some("1.0.1"), Some("1.0.2"))
        );
        assert!(b2["tasks"][0]["started_at"].as_str() >= b1["finished_at"].as_str());
    });
}

/// Issue 12 (8): a signed push of a branch the pipeline does not build is
/// ignored, and a build of a branch outside `secrets_for` (by default the
/// built branches) never receives the pipeline's secrets.
#[test]
fn pushes_of_unbuilt_branches_are_ignored_and_secrets_stay_on_built_branches() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        let yaml = pipeline_yaml(
            "guarded",
            &repo.url(),
            "1.0.{build}",
            "  tasks:\n    - shell: \"echo \\\"$TOKEN\\\" > leak.txt\"\n      env: { TOKEN: \"${{ secrets.HOOK }}\" }\n  artifacts: [ \"leak.txt\" ]",
        )
        .replace(
            "branch: main }",
            "branch: main, webhook_secret: \"${{ secrets.HOOK }}\" }",
        );
        import(app, &yaml);
        app.set_secret("guarded", "HOOK", SECRET);
        let feature = repo.commit_on("feature", &[("f", "f\n")], "feature work");
        let (status, v) = parse(deliver(
            app,
            "github",
            "guarded",
            "push",
            "f-1",
            &github_push(&feature, "feature"),
            Some(SECRET),
        ));
        assert_eq!(
            (status, v["status"].as_str()),
            (200, Some("ignored")),
            "[{}] {v}",
            app.backend
        );
        assert!(v["reason"].as_str().unwrap().contains("feature"), "{v}");
        let viewer = app.token("vic", Role::Viewer);
        assert!(builds_of(app, &viewer, "guarded").is_empty());

        // A person may still build the branch, but its build gets no secret.
        let dana = app.token("dana", Role::Deployer);
        let n = queue(app, &dana, "guarded", json!({"branch": "feature"}));
        let b = finished(app, &dana, "guarded", n);
        assert_eq!(b["state"], "failed", "{b}");
        let error = b["error"].as_str().unwrap();
        assert!(error.contains("secrets_for"), "{b}");
        assert!(error.contains("`feature`"), "{b}");
        assert!(b["release"].is_null(), "{b}");
        // A commit of the feature branch cannot borrow main's name.
        let n = queue(
            app,
            &dana,
            "guarded",
            json!({"branch": "main", "commit": feature}),
        );
        let b = finished(app, &dana, "guarded", n);
        assert_eq!(b["state"], "failed", "{b}");
        assert!(
            b["error"]
                .as_str()
                .unwrap()
                .contains("is not on branch `main`"),
            "{b}"
        );
        // The built branch gets them.
        let n = queue(app, &dana, "guarded", json!({"branch": "main"}));
        let b = finished(app, &dana, "guarded", n);
        assert_eq!(b["state"], "succeeded", "{b}");

        // `secrets_for` names the protected branches explicitly.
        import(
            app,
            &yaml.replace(
                "webhook_secret:",
                "branches: [main, \"feature\"], secrets_for: [main], webhook_secret:",
            ),
        );
        let (status, v) = parse(deliver(
            app,
            "github",
            "guarded",
            "push",
            "f-2",
            &github_push(&feature, "feature"),
            Some(SECRET),
        ));
        assert_eq!(status, 202, "{v}");
        let b = finished(
            app,
            &dana,
            "guarded",
            v["build"]["number"].as_i64().unwrap(),
        );
        assert_eq!(b["state"], "failed", "{b}");
        assert!(b["error"].as_str().unwrap().contains("main"), "{b}");
    });
}

/// Issue 12 (10): without a delivery id, the same signed body is a replay:
/// the second delivery builds nothing; another body still builds.
#[test]
fn a_replayed_body_without_a_delivery_id_builds_once() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        hooked_pipeline(app, "hooked", &repo, "");
        let send = |body: &str| {
            parse(
                app.client
                    .post(app.url("/hooks/generic/hooked"))
                    .header("Content-Type", "application/json")
                    .header("X-Slipway-Event", "push")
                    .header(
                        "X-Slipway-Signature",
                        sign(SECRET.as_bytes(), body.as_bytes()),
                    )
                    .body(body.to_string())
                    .send()
                    .unwrap(),
            )
        };
        let body = generic_push(&repo.head(), "main");
        let (status, v) = send(&body);
        assert_eq!(status, 202, "[{}] {v}", app.backend);
        for _ in 0..2 {
            let (status, v) = send(&body);
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["status"], "duplicate", "{v}");
        }
        let viewer = app.token("vic", Role::Viewer);
        assert_eq!(builds_of(app, &viewer, "hooked").len(), 1);
        let next = repo.commit(&[("README", "y\n")], "next");
        let (status, v) = send(&generic_push(&next, "main"));
        assert_eq!(status, 202, "{v}");
        assert_eq!(builds_of(app, &viewer, "hooked").len(), 2);
    });
}
