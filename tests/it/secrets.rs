//! Secrets: set through the API and the engine (what the CLI calls),
//! encrypted at rest, never shown, never exported, audited without values.

use diesel::prelude::*;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use slipway::domain::Role;
use slipway::engine::secrets::{self, SecretKey};
use slipway::storage::{self, schema};

use crate::helpers::{SPEC_PIPELINE, TestApp, each_backend};

const PIPELINE: &str = "space-game-web";
const VALUE: &str = "hook-value-5f0c2a9e-Zq!";

/// The SPEC pipeline with `source.webhook_secret: ${{ secrets.HOOK }}`.
fn pipeline_with_hook() -> String {
    let yaml = SPEC_PIPELINE.replace(
        "source: { repo: /srv/git/space-game-web, branch: main }",
        "source: { repo: /srv/git/space-game-web, branch: main, webhook_secret: \"${{ secrets.HOOK }}\" }",
    );
    assert_ne!(yaml, SPEC_PIPELINE);
    yaml
}

fn setup(app: &TestApp) -> i64 {
    let res = app.import(&pipeline_with_hook());
    assert_eq!(res.status(), 201, "{}", res.text().unwrap());
    let mut conn = app.conn();
    storage::find_pipeline(&mut conn, PIPELINE)
        .unwrap()
        .unwrap()
        .id
}

fn put(app: &TestApp, token: Option<&str>, path: &str, body: &str) -> (u16, String) {
    let mut req = app
        .client
        .put(app.url(path))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().unwrap();
    (res.status().as_u16(), res.text().unwrap())
}

fn delete(app: &TestApp, token: Option<&str>, path: &str) -> (u16, String) {
    let mut req = app.client.delete(app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().unwrap();
    (res.status().as_u16(), res.text().unwrap())
}

fn set_body(value: &str) -> String {
    serde_json::json!({ "value": value }).to_string()
}

fn resolve(app: &TestApp, key: &SecretKey, pipeline_id: i64, name: &str) -> Option<String> {
    let mut conn = app.conn();
    secrets::resolve_secret(&mut conn, key, pipeline_id, name)
        .unwrap()
        .map(|v| v.expose_secret().to_string())
}

fn raw_rows(app: &TestApp, pipeline_id: i64) -> Vec<storage::SecretRow> {
    let mut conn = app.conn();
    storage::secrets::list_secrets(&mut conn, pipeline_id).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn set_list_replace_delete_through_the_api() {
    each_backend(|app| {
        let pipeline_id = setup(app);
        let manager = app.token("mara", Role::ReleaseManager);
        let path = "/api/v1/pipelines/space-game-web/secrets/HOOK";

        let (status, body) = put(app, Some(&manager), path, &set_body(VALUE));
        assert_eq!(status, 204, "[{}] {body}", app.backend);
        assert_eq!(
            resolve(app, &app.secret_key, pipeline_id, "HOOK").as_deref(),
            Some(VALUE)
        );

        // At rest: ciphertext (value + 16-byte tag) and a 96-bit nonce, no plaintext.
        let rows = raw_rows(app, pipeline_id);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "HOOK");
        assert_eq!(rows[0].nonce.len(), 12);
        assert_eq!(rows[0].ciphertext.len(), VALUE.len() + 16);
        assert!(!contains(&rows[0].ciphertext, VALUE.as_bytes()));
        assert!(!contains(&rows[0].ciphertext, &VALUE.as_bytes()[..8]));
        assert!(!format!("{:?}", rows[0]).contains(VALUE));

        // The list shows names and times, never values.
        let res = app.get_with_token("/api/v1/pipelines/space-game-web/secrets", &manager);
        assert_eq!(res.status(), 200);
        let text = res.text().unwrap();
        assert!(!text.contains(VALUE), "{text}");
        let list: Value = serde_json::from_str(&text).unwrap();
        let items = list.as_array().unwrap();
        assert_eq!(items.len(), 1, "{list}");
        assert_eq!(items[0]["name"], "HOOK");
        let keys: Vec<&String> = items[0].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "updated_at"]);
        let first_update = items[0]["updated_at"].as_str().unwrap().to_string();
        assert!(
            chrono::DateTime::parse_from_rfc3339(&first_update).is_ok(),
            "{first_update}"
        );

        // Replacing keeps one row with a fresh nonce.
        let (status, _) = put(app, Some(&manager), path, &set_body("second value"));
        assert_eq!(status, 204);
        let again = raw_rows(app, pipeline_id);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].nonce, rows[0].nonce);
        assert_eq!(again[0].created_at, rows[0].created_at);
        assert_eq!(
            resolve(app, &app.secret_key, pipeline_id, "HOOK").as_deref(),
            Some("second value")
        );

        // Delete, then 404 for a secret that is not there.
        let (status, body) = delete(app, Some(&manager), path);
        assert_eq!(status, 204, "{body}");
        assert!(raw_rows(app, pipeline_id).is_empty());
        let (status, body) = delete(app, Some(&manager), path);
        assert_eq!(status, 404, "{body}");
        assert_eq!(resolve(app, &app.secret_key, pipeline_id, "HOOK"), None);
    });
}

#[test]
fn the_engine_call_of_the_cli_and_a_wrong_key() {
    each_backend(|app| {
        let pipeline_id = setup(app);
        let mut conn = app.conn();
        for (name, value) in [("HOOK", VALUE), ("DB_PASSWORD", "pa55\nword")] {
            secrets::set_secret(
                &mut conn,
                &app.secret_key,
                PIPELINE,
                name,
                &SecretString::from(value),
                "cli",
            )
            .unwrap();
        }
        let names: Vec<String> = secrets::list_secret_names(&mut conn, pipeline_id)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["DB_PASSWORD", "HOOK"]);

        let all = secrets::resolve_all(&mut conn, &app.secret_key, pipeline_id).unwrap();
        let all: Vec<(String, String)> = all
            .into_iter()
            .map(|(n, v)| (n, v.expose_secret().to_string()))
            .collect();
        assert_eq!(
            all,
            [
                ("DB_PASSWORD".to_string(), "pa55\nword".to_string()),
                ("HOOK".to_string(), VALUE.to_string())
            ]
        );

        // Substitution for task environments and the webhook secret.
        let text = secrets::substitute_secrets(
            &mut conn,
            &app.secret_key,
            pipeline_id,
            "hook=${{ secrets.HOOK }}",
        )
        .unwrap();
        assert_eq!(text.expose_secret(), format!("hook={VALUE}"));
        let err = secrets::substitute_secrets(
            &mut conn,
            &app.secret_key,
            pipeline_id,
            "${{ secrets.NOPE }}",
        )
        .unwrap_err();
        assert!(err.to_string().contains("`NOPE`"), "{err}");

        // Another key cannot decrypt; the error says why and shows no value.
        let other = SecretKey::generate().unwrap();
        let err = secrets::resolve_secret(&mut conn, &other, pipeline_id, "HOOK").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("cannot decrypt the secret `HOOK`"),
            "{message}"
        );
        assert!(message.contains("SLIPWAY_SECRET_KEY"), "{message}");
        assert!(!message.contains(VALUE));
        assert!(secrets::resolve_all(&mut conn, &other, pipeline_id).is_err());

        // Unknown pipeline, bad name, empty value.
        let set = |conn: &mut slipway::storage::DbConn, pipeline: &str, name: &str, v: &str| {
            secrets::set_secret(
                conn,
                &app.secret_key,
                pipeline,
                name,
                &SecretString::from(v),
                "cli",
            )
        };
        assert!(matches!(
            set(&mut conn, "nope", "HOOK", "v"),
            Err(slipway::engine::EngineError::NotFound(_))
        ));
        assert!(matches!(
            set(&mut conn, PIPELINE, "9LIVES", "v"),
            Err(slipway::engine::EngineError::Invalid(_))
        ));
        assert!(matches!(
            set(&mut conn, PIPELINE, "EMPTY", ""),
            Err(slipway::engine::EngineError::Invalid(_))
        ));
    });
}

#[test]
fn a_ciphertext_cannot_be_moved_to_another_secret() {
    each_backend(|app| {
        let pipeline_id = setup(app);
        let mut conn = app.conn();
        for (name, value) in [("A", "value of a"), ("B", "value of b")] {
            secrets::set_secret(
                &mut conn,
                &app.secret_key,
                PIPELINE,
                name,
                &SecretString::from(value),
                "cli",
            )
            .unwrap();
        }
        let a = storage::secrets::find_secret(&mut conn, pipeline_id, "A")
            .unwrap()
            .unwrap();
        // Someone with database access swaps B's row for A's ciphertext.
        diesel::update(
            schema::secrets::table
                .filter(schema::secrets::pipeline_id.eq(pipeline_id))
                .filter(schema::secrets::name.eq("B")),
        )
        .set((
            schema::secrets::ciphertext.eq(&a.ciphertext),
            schema::secrets::nonce.eq(&a.nonce),
        ))
        .execute(&mut *conn)
        .unwrap();
        let err = secrets::resolve_secret(&mut conn, &app.secret_key, pipeline_id, "B")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot decrypt the secret `B`"), "{err}");
        assert_eq!(
            secrets::resolve_secret(&mut conn, &app.secret_key, pipeline_id, "A")
                .unwrap()
                .unwrap()
                .expose_secret(),
            "value of a"
        );
    });
}

#[test]
fn export_keeps_the_reference_and_audit_has_no_value() {
    each_backend(|app| {
        setup(app);
        let manager = app.token("mara", Role::ReleaseManager);
        let (status, _) = put(
            app,
            Some(&manager),
            "/api/v1/pipelines/space-game-web/secrets/HOOK",
            &set_body(VALUE),
        );
        assert_eq!(status, 204);

        let res = app.get("/api/v1/pipelines/space-game-web/export");
        assert_eq!(res.status(), 200);
        let yaml = res.text().unwrap();
        assert!(
            yaml.contains("webhook_secret: ${{ secrets.HOOK }}"),
            "{yaml}"
        );
        assert!(!yaml.contains(VALUE), "{yaml}");

        let res = app.get("/api/v1/pipelines/space-game-web");
        assert!(!res.text().unwrap().contains(VALUE));
        let res = app.get("/pipelines/space-game-web");
        assert!(!res.text().unwrap().contains(VALUE));

        let mut conn = app.conn();
        let audit = storage::list_audit(&mut conn, None, 100).unwrap();
        let set: Vec<_> = audit.iter().filter(|a| a.action == "secret.set").collect();
        assert_eq!(set.len(), 1, "{audit:?}");
        assert_eq!(set[0].actor, "mara");
        assert_eq!(set[0].subject, "pipeline:space-game-web");
        assert!(set[0].detail.contains("HOOK"), "{}", set[0].detail);
        for record in &audit {
            assert!(!record.detail.contains(VALUE), "{record:?}");
            assert!(!record.subject.contains(VALUE), "{record:?}");
        }
        storage::verify_audit_chain(&mut conn).unwrap();
    });
}

#[test]
fn who_may_do_what_and_bad_input() {
    each_backend(|app| {
        setup(app);
        let path = "/api/v1/pipelines/space-game-web/secrets/HOOK";
        let list = "/api/v1/pipelines/space-game-web/secrets";
        let viewer = app.token("tim", Role::Viewer);
        let deployer = app.token("andy", Role::Deployer);
        let manager = app.token("mara", Role::ReleaseManager);

        let code = |s: &str| -> String {
            serde_json::from_str::<Value>(s).unwrap()["error"]["code"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        let (status, body) = put(app, None, path, &set_body(VALUE));
        assert_eq!((status, code(&body).as_str()), (401, "unauthorized"));
        for weak in [&viewer, &deployer] {
            let (status, body) = put(app, Some(weak), path, &set_body(VALUE));
            assert_eq!((status, code(&body).as_str()), (403, "forbidden"), "{body}");
            assert_eq!(delete(app, Some(weak), path).0, 403);
        }
        assert_eq!(delete(app, None, path).0, 401);
        assert_eq!(app.get_anonymous(list).status(), 401);
        let res = app.get_with_token(list, &viewer);
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().unwrap(), "[]", "nothing was stored");

        // Bad input: name, value, body, pipeline.
        let (status, body) = put(
            app,
            Some(&manager),
            "/api/v1/pipelines/space-game-web/secrets/not-a-name",
            &set_body(VALUE),
        );
        assert_eq!(status, 422, "{body}");
        assert!(body.contains("not-a-name"), "{body}");
        let (status, body) = put(app, Some(&manager), path, &set_body(""));
        assert_eq!(status, 422, "{body}");
        let (status, body) = put(app, Some(&manager), path, "{\"value\": ");
        assert_eq!((status, code(&body).as_str()), (400, "bad_request"));
        let (status, _) = put(app, Some(&manager), path, "{\"val\": \"x\"}");
        assert_eq!(status, 400);
        let (status, body) = put(
            app,
            Some(&manager),
            "/api/v1/pipelines/nope/secrets/HOOK",
            &set_body(VALUE),
        );
        assert_eq!((status, code(&body).as_str()), (404, "not_found"));
        assert_eq!(
            app.get_with_token("/api/v1/pipelines/nope/secrets", &viewer)
                .status(),
            404
        );
        assert_eq!(
            delete(app, Some(&manager), "/api/v1/pipelines/nope/secrets/HOOK").0,
            404
        );

        // The OpenAPI document describes the routes.
        let doc: Value = app.get("/api/v1/openapi.json").json().unwrap();
        let paths = &doc["paths"];
        assert!(paths["/api/v1/pipelines/{pipeline}/secrets"]["get"].is_object());
        assert!(paths["/api/v1/pipelines/{pipeline}/secrets/{name}"]["put"].is_object());
        assert!(paths["/api/v1/pipelines/{pipeline}/secrets/{name}"]["delete"].is_object());
    });
}
