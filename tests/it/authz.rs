//! Every route × every role: anonymous requests are sent to sign in (pages)
//! or refused (API) except on the public routes; a role below a route's
//! minimum gets 403; the minimum role and above get past authorization.
//!
//! The table below must name every route of `web::routes`: the test reads
//! the route table from the source (`.route("PATH", web::METHOD()` in
//! `src/web/**`, with `/api/v1` before those in `src/web/api/`) and fails
//! when a route has no entry, or an entry no route.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::blocking::{Client, RequestBuilder, Response};
use slipway::domain::{DeploymentState, Role};
use slipway::storage;

use crate::helpers::{SPEC_PIPELINE, TestApp, browser, csrf_of, each_backend, seed_releases};

/// Who may use a route: anyone, or this role and above.
#[derive(Clone, Copy, Debug)]
enum Access {
    Public,
    Min(Role),
}
use Access::{Min, Public};

const V: Access = Min(Role::Viewer);
const D: Access = Min(Role::Deployer);
const RM: Access = Min(Role::ReleaseManager);
const A: Access = Min(Role::Admin);

/// (method, route pattern, a path to request, who may). In paths, `{d}` is
/// a deployment, `{u}` a user and `{t}` one of that user's tokens.
const ROUTES: &[(&str, &str, &str, Access)] = &[
    // Sign-in, health, static files, webhooks.
    ("GET", "/login", "/login", Public),
    ("POST", "/login", "/login", Public),
    ("POST", "/logout", "/logout", Public),
    ("GET", "/auth/oidc/login", "/auth/oidc/login", Public),
    ("GET", "/auth/oidc/callback", "/auth/oidc/callback", Public),
    ("GET", "/healthz", "/healthz", Public),
    ("GET", "/readyz", "/readyz", Public),
    ("GET", "/metrics", "/metrics", Public),
    ("GET", "/static/{file}", "/static/nothing.css", Public),
    (
        "POST",
        "/hooks/{provider}/{pipeline}",
        "/hooks/github/space-game-web",
        Public,
    ),
    // People.
    ("GET", "/settings/tokens", "/settings/tokens", V),
    ("POST", "/settings/tokens", "/settings/tokens", V),
    (
        "POST",
        "/settings/tokens/{id}/revoke",
        "/settings/tokens/{t}/revoke",
        V,
    ),
    ("GET", "/admin/users", "/admin/users", A),
    ("POST", "/admin/users/{id}/role", "/admin/users/{u}/role", A),
    (
        "POST",
        "/admin/users/{id}/groups",
        "/admin/users/{u}/groups",
        A,
    ),
    (
        "POST",
        "/admin/users/{id}/groups/remove",
        "/admin/users/{u}/groups/remove",
        A,
    ),
    (
        "POST",
        "/admin/users/{id}/disable",
        "/admin/users/{u}/disable",
        A,
    ),
    (
        "POST",
        "/admin/users/{id}/enable",
        "/admin/users/{u}/enable",
        A,
    ),
    ("GET", "/audit", "/audit", RM),
    ("GET", "/admin/notifications", "/admin/notifications", A),
    (
        "POST",
        "/admin/notifications/{id}/retry",
        "/admin/notifications/1/retry",
        A,
    ),
    // Pipelines, releases, stages, builds, deployments.
    ("GET", "/", "/", V),
    (
        "GET",
        "/pipelines/{pipeline}",
        "/pipelines/space-game-web",
        V,
    ),
    (
        "GET",
        "/pipelines/{pipeline}/releases",
        "/pipelines/space-game-web/releases",
        V,
    ),
    (
        "GET",
        "/pipelines/{pipeline}/releases/{version}",
        "/pipelines/space-game-web/releases/1.0.1",
        V,
    ),
    (
        "GET",
        "/pipelines/{pipeline}/releases/{version}/artifacts/{path:.+}",
        "/pipelines/space-game-web/releases/1.0.1/artifacts/dist/app.js",
        V,
    ),
    (
        "GET",
        "/pipelines/{pipeline}/stages/{stage}",
        "/pipelines/space-game-web/stages/dev",
        V,
    ),
    (
        "POST",
        "/pipelines/{pipeline}/stages/{stage}",
        "/pipelines/space-game-web/stages/dev",
        RM,
    ),
    (
        "POST",
        "/pipelines/{pipeline}/stages/{stage}/deploy",
        "/pipelines/space-game-web/stages/dev/deploy",
        D,
    ),
    (
        "GET",
        "/pipelines/{pipeline}/stages/{stage}/configure",
        "/pipelines/space-game-web/stages/dev/configure",
        V,
    ),
    (
        "POST",
        "/pipelines/{pipeline}/stages/{stage}/configure",
        "/pipelines/space-game-web/stages/dev/configure",
        RM,
    ),
    (
        "POST",
        "/pipelines/{pipeline}/stages/{stage}/rollback",
        "/pipelines/space-game-web/stages/dev/rollback",
        RM,
    ),
    (
        "GET",
        "/pipelines/{pipeline}/builds",
        "/pipelines/space-game-web/builds",
        V,
    ),
    (
        "GET",
        "/pipelines/{pipeline}/builds/{number}",
        "/pipelines/space-game-web/builds/1",
        V,
    ),
    (
        "POST",
        "/pipelines/{pipeline}/builds",
        "/pipelines/space-game-web/builds",
        D,
    ),
    (
        "POST",
        "/pipelines/{pipeline}/builds/{number}/cancel",
        "/pipelines/space-game-web/builds/1/cancel",
        D,
    ),
    (
        "POST",
        "/pipelines/{pipeline}/builds/{number}/retry",
        "/pipelines/space-game-web/builds/1/retry",
        D,
    ),
    (
        "POST",
        "/pipelines/{pipeline}/secrets",
        "/pipelines/space-game-web/secrets",
        RM,
    ),
    (
        "GET",
        "/pipelines/{pipeline}/releases/{version}/deployments/{id}",
        "/pipelines/space-game-web/releases/1.0.1/deployments/{d}",
        V,
    ),
    (
        "POST",
        "/pipelines/{pipeline}/releases/{version}/deployments/{id}/cancel",
        "/pipelines/space-game-web/releases/1.0.1/deployments/{d}/cancel",
        D,
    ),
    (
        "POST",
        "/pipelines/{pipeline}/releases/{version}/deployments/{id}/redeploy",
        "/pipelines/space-game-web/releases/1.0.1/deployments/{d}/redeploy",
        D,
    ),
    // The live pages' event stream (401 when anonymous, like the API).
    ("GET", "/events", "/events", V),
    // Environments and gates.
    ("GET", "/environments", "/environments", V),
    (
        "GET",
        "/environments/{app}/swap",
        "/environments/space-game/swap",
        RM,
    ),
    (
        "POST",
        "/environments/{app}/swap",
        "/environments/space-game/swap",
        RM,
    ),
    (
        "POST",
        "/environments/{app}/swap/confirm",
        "/environments/space-game/swap/confirm",
        RM,
    ),
    (
        "POST",
        "/environments/{app}/swap/cancel",
        "/environments/space-game/swap/cancel",
        RM,
    ),
    // Approvals: every signed-in role (the approval's list decides).
    ("GET", "/approvals", "/approvals", V),
    ("POST", "/approvals/batch", "/approvals/batch", V),
    ("GET", "/approvals/{id}", "/approvals/1", V),
    ("POST", "/approvals/{id}", "/approvals/1", V),
    ("GET", "/gates", "/gates", V),
    ("GET", "/gates/{id}", "/gates/1", V),
    ("POST", "/gates/{id}/reevaluate", "/gates/1/reevaluate", RM),
    ("POST", "/gates/{id}/bypass", "/gates/1/bypass", RM),
    ("POST", "/gates/{id}/answer", "/gates/1/answer", V),
    // The JSON API.
    ("GET", "/api/v1/openapi.json", "/api/v1/openapi.json", V),
    ("GET", "/api/v1/pipelines", "/api/v1/pipelines", V),
    ("POST", "/api/v1/pipelines", "/api/v1/pipelines", RM),
    (
        "GET",
        "/api/v1/pipelines/{pipeline}",
        "/api/v1/pipelines/space-game-web",
        V,
    ),
    (
        "GET",
        "/api/v1/pipelines/{pipeline}/export",
        "/api/v1/pipelines/space-game-web/export",
        V,
    ),
    (
        "GET",
        "/api/v1/pipelines/{pipeline}/releases",
        "/api/v1/pipelines/space-game-web/releases",
        V,
    ),
    (
        "GET",
        "/api/v1/pipelines/{pipeline}/releases/{version}",
        "/api/v1/pipelines/space-game-web/releases/1.0.1",
        V,
    ),
    (
        "GET",
        "/api/v1/pipelines/{pipeline}/builds",
        "/api/v1/pipelines/space-game-web/builds",
        V,
    ),
    (
        "POST",
        "/api/v1/pipelines/{pipeline}/builds",
        "/api/v1/pipelines/space-game-web/builds",
        D,
    ),
    (
        "GET",
        "/api/v1/pipelines/{pipeline}/builds/{number}",
        "/api/v1/pipelines/space-game-web/builds/1",
        V,
    ),
    (
        "GET",
        "/api/v1/pipelines/{pipeline}/builds/{number}/log",
        "/api/v1/pipelines/space-game-web/builds/1/log",
        V,
    ),
    (
        "POST",
        "/api/v1/pipelines/{pipeline}/builds/{number}/cancel",
        "/api/v1/pipelines/space-game-web/builds/1/cancel",
        D,
    ),
    (
        "GET",
        "/api/v1/pipelines/{pipeline}/secrets",
        "/api/v1/pipelines/space-game-web/secrets",
        V,
    ),
    (
        "PUT",
        "/api/v1/pipelines/{pipeline}/secrets/{name}",
        "/api/v1/pipelines/space-game-web/secrets/DEPLOY_TOKEN",
        RM,
    ),
    (
        "DELETE",
        "/api/v1/pipelines/{pipeline}/secrets/{name}",
        "/api/v1/pipelines/space-game-web/secrets/DEPLOY_TOKEN",
        RM,
    ),
    (
        "GET",
        "/api/v1/pipelines/{pipeline}/stages/{stage}/schedule",
        "/api/v1/pipelines/space-game-web/stages/test/schedule",
        V,
    ),
    (
        "POST",
        "/api/v1/pipelines/{pipeline}/stages/{stage}/deployments",
        "/api/v1/pipelines/space-game-web/stages/dev/deployments",
        D,
    ),
    (
        "GET",
        "/api/v1/deployments/{id}",
        "/api/v1/deployments/{d}",
        V,
    ),
    (
        "GET",
        "/api/v1/deployments/{id}/log",
        "/api/v1/deployments/{d}/log",
        V,
    ),
    (
        "POST",
        "/api/v1/deployments/{id}/cancel",
        "/api/v1/deployments/{d}/cancel",
        D,
    ),
    (
        "POST",
        "/api/v1/deployments/{id}/redeploy",
        "/api/v1/deployments/{d}/redeploy",
        D,
    ),
    ("GET", "/api/v1/approvals", "/api/v1/approvals", V),
    ("GET", "/api/v1/approvals/{id}", "/api/v1/approvals/1", V),
    ("POST", "/api/v1/approvals/{id}", "/api/v1/approvals/1", V),
    ("GET", "/api/v1/gates", "/api/v1/gates", V),
    ("GET", "/api/v1/gates/{id}", "/api/v1/gates/1", V),
    (
        "POST",
        "/api/v1/gates/{id}/reevaluate",
        "/api/v1/gates/1/reevaluate",
        RM,
    ),
    (
        "POST",
        "/api/v1/gates/{id}/bypass",
        "/api/v1/gates/1/bypass",
        RM,
    ),
    (
        "POST",
        "/api/v1/gates/{id}/answer",
        "/api/v1/gates/1/answer",
        V,
    ),
    (
        "GET",
        "/api/v1/apps/{app}/slots",
        "/api/v1/apps/space-game/slots",
        V,
    ),
    (
        "POST",
        "/api/v1/apps/{app}/swap",
        "/api/v1/apps/space-game/swap",
        RM,
    ),
    (
        "POST",
        "/api/v1/apps/{app}/swap/confirm",
        "/api/v1/apps/space-game/swap/confirm",
        RM,
    ),
    (
        "POST",
        "/api/v1/apps/{app}/swap/cancel",
        "/api/v1/apps/space-game/swap/cancel",
        RM,
    ),
    // Last: it ends the walker's own sessions.
    (
        "POST",
        "/settings/sessions/revoke",
        "/settings/sessions/revoke",
        V,
    ),
];

/// The routes of `web::routes`, read from the source: every
/// `.route("PATH", web::METHOD()` under `src/web`, the ones under
/// `src/web/api` inside the `/api/v1` scope.
fn routes_in_source() -> BTreeSet<(String, String)> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web");
    let mut files = Vec::new();
    walk(&web, &mut files);
    let mut routes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let compact: String = text.split_whitespace().collect::<Vec<_>>().join("");
        let prefix = if file.starts_with(web.join("api")) {
            "/api/v1"
        } else {
            ""
        };
        for (i, _) in compact.match_indices(".route(\"") {
            let rest = &compact[i + ".route(\"".len()..];
            let Some(end) = rest.find('"') else { continue };
            let path = &rest[..end];
            let after = &rest[end + 1..];
            let method = ["get", "post", "put", "patch", "delete"]
                .into_iter()
                .find(|m| after.starts_with(&format!(",web::{m}()")))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: route {path} is not `web::METHOD()`; teach tests/it/authz.rs to read it",
                        file.display()
                    )
                });
            routes.insert((method.to_uppercase(), format!("{prefix}{path}")));
        }
        for kind in ["web::scope(\"", "web::resource(\""] {
            for (i, _) in compact.match_indices(kind) {
                let rest = &compact[i + kind.len()..];
                let path = &rest[..rest.find('"').unwrap_or(0)];
                assert!(
                    kind == "web::scope(\"" && path == "/api/v1",
                    "{}: `{kind}{path}\")` is new to the route table; teach tests/it/authz.rs to read it",
                    file.display()
                );
            }
        }
    }
    routes
}

#[test]
fn the_table_names_every_route() {
    let source = routes_in_source();
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(table.len(), ROUTES.len(), "a route is in the table twice");
    let missing: Vec<_> = source.difference(&table).collect();
    let stale: Vec<_> = table.difference(&source).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "routes without an entry in tests/it/authz.rs ROUTES (add who may use them): {missing:?}; entries without a route: {stale:?}"
    );
    assert!(source.len() > 50, "the route table was read: {source:?}");
}

struct Identity {
    role: Role,
    session: Client,
    csrf: String,
    token: String,
}

fn request(client: &Client, method: &str, url: &str) -> RequestBuilder {
    match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "PUT" => client.put(url),
        "DELETE" => client.delete(url),
        other => panic!("method {other}"),
    }
}

/// Sends the request as `who` (a session with its CSRF token for pages, a
/// bearer token for the API; nobody when `None`).
fn send(app: &TestApp, method: &str, path: &str, who: Option<&Identity>) -> Response {
    let url = app.url(path);
    let api = path.starts_with("/api/");
    let builder = match who {
        None => request(&app.client, method, &url),
        Some(id) if api => request(&app.client, method, &url).bearer_auth(&id.token),
        Some(id) => request(&id.session, method, &url),
    };
    let csrf = who.map(|id| id.csrf.as_str()).unwrap_or_default();
    let builder = match (method, api) {
        ("GET", _) => builder,
        (_, true) => builder.json(&api_body(path)),
        (_, false) => builder.form(&[
            ("csrf", csrf),
            ("release", "1.0.1"),
            ("reason", "authz walk"),
            ("role", "viewer"),
            ("group", "walkers"),
            ("name", "WALK"),
            ("value", "s3cret"),
            ("branch", "main"),
            ("from", "staging"),
            ("to", "production"),
        ]),
    };
    builder.send().unwrap()
}

/// A well-formed JSON body for an API route (bodies refuse unknown fields).
fn api_body(path: &str) -> serde_json::Value {
    use serde_json::json;
    if path.ends_with("/deployments") {
        json!({"release": "1.0.1"})
    } else if path.ends_with("/bypass") {
        json!({"reason": "authz walk"})
    } else if path.ends_with("/swap") {
        json!({"from": "staging", "to": "production"})
    } else if path.contains("/secrets/") {
        json!({"value": "s3cret"})
    } else if path.ends_with("/builds") {
        json!({"branch": "main"})
    } else {
        json!({})
    }
}

fn is_sign_in_redirect(res: &Response) -> bool {
    res.status() == 303
        && res
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .is_some_and(|l| l.starts_with("/login"))
}

#[test]
fn every_route_answers_every_role_as_the_table_says() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        seed_releases(
            app,
            "space-game-web",
            1,
            |_| "main".into(),
            |_| vec![("dev", DeploymentState::Succeeded)],
        );
        let deployment = {
            let mut conn = app.conn();
            let p = storage::find_pipeline(&mut conn, "space-game-web")
                .unwrap()
                .unwrap();
            let release = storage::find_release(&mut conn, p.id, "1.0.1")
                .unwrap()
                .unwrap();
            storage::deployments_of_release(&mut conn, release.id).unwrap()[0].id
        };
        app.token("walk-target", Role::Viewer);
        let (target, target_token) = {
            let mut conn = app.conn();
            let user = storage::find_user_by_name(&mut conn, "walk-target")
                .unwrap()
                .unwrap();
            (
                user.id,
                storage::list_tokens(&mut conn, user.id).unwrap()[0].id,
            )
        };
        let identities: Vec<Identity> = Role::ALL
            .iter()
            .map(|&role| {
                let name = format!("walk-{}", role.as_str());
                let token = app.token(&name, role);
                let session = browser();
                let res = app.sign_in(&session, &name, "a long test password", "/");
                assert_eq!(res.status(), 303);
                let page = session.get(app.url("/settings/tokens")).send().unwrap();
                let csrf = csrf_of(&scraper::Html::parse_document(&page.text().unwrap()));
                Identity {
                    role,
                    session,
                    csrf,
                    token,
                }
            })
            .collect();

        let mut failures = Vec::new();
        for (method, _, sample, access) in ROUTES {
            let path = sample
                .replace("{d}", &deployment.to_string())
                .replace("{u}", &target.to_string())
                .replace("{t}", &target_token.to_string());
            let api = path.starts_with("/api/");
            // A browser's EventSource cannot follow a redirect to sign in.
            let refuses_with_401 = api || path == "/events";
            let res = send(app, method, &path, None);
            let status = res.status().as_u16();
            match access {
                Public => {
                    if is_sign_in_redirect(&res) {
                        failures.push(format!("anonymous {method} {path}: sent to sign in"));
                    }
                    continue;
                }
                Min(_) if refuses_with_401 && status != 401 => {
                    failures.push(format!("anonymous {method} {path}: {status}, not 401"));
                }
                Min(_) if !refuses_with_401 && !is_sign_in_redirect(&res) => {
                    failures.push(format!(
                        "anonymous {method} {path}: {status}, not a redirect to /login"
                    ));
                }
                Min(_) => {}
            }
            let Min(min) = access else { continue };
            for who in &identities {
                let res = send(app, method, &path, Some(who));
                let status = res.status().as_u16();
                let refused = status == 401 || status == 403 || is_sign_in_redirect(&res);
                if who.role < *min && status != 403 {
                    failures.push(format!(
                        "{} {method} {path}: {status}, not 403 (needs {})",
                        who.role.as_str(),
                        min.as_str()
                    ));
                }
                if who.role >= *min && refused {
                    let body = res.text().unwrap_or_default();
                    failures.push(format!(
                        "{} {method} {path}: refused with {status}: {}",
                        who.role.as_str(),
                        body.chars().take(300).collect::<String>()
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "[{}] {} mismatches:\n{}",
            app.backend,
            failures.len(),
            failures.join("\n")
        );
    });
}
