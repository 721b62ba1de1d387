//! The JSON API: shapes, errors, authorization, import/export.

use serde_json::Value;
use slipway::domain::DeploymentState::*;
use slipway::domain::Role;

use crate::helpers::{SPEC_PIPELINE, each_backend, seed_releases};

fn json(res: reqwest::blocking::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body = res.text().unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn import_creates_then_revises_then_reports_unchanged() {
    each_backend(|app| {
        let (status, v) = json(app.import(SPEC_PIPELINE));
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["pipeline"], "space-game-web");
        assert_eq!(v["revision"], 1);
        assert_eq!(v["created"], true);

        let (status, v) = json(app.import(SPEC_PIPELINE));
        assert_eq!(status, 200);
        assert_eq!(v["unchanged"], true);
        assert_eq!(v["revision"], 1);

        let changed = SPEC_PIPELINE.replace("1.0.{build}", "2.0.{build}");
        let (status, v) = json(app.import(&changed));
        assert_eq!(status, 200);
        assert_eq!(v["revision"], 2);
        assert_eq!(v["created"], false);
        assert_eq!(v["unchanged"], false);

        let (_, v) = json(app.get("/api/v1/pipelines/space-game-web"));
        assert_eq!(v["revision"], 2);
        assert_eq!(v["version_template"], "2.0.{build}");
        let stages: Vec<&str> = v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(stages, vec!["dev", "test", "preprod", "production"]);

        // Revisions are kept, never overwritten.
        let mut conn = app.conn();
        let p = slipway::storage::find_pipeline(&mut conn, "space-game-web")
            .unwrap()
            .unwrap();
        let revisions = slipway::storage::list_revisions(&mut conn, p.id).unwrap();
        assert_eq!(revisions.len(), 2);
        assert!(revisions.iter().any(|r| r.yaml.contains("1.0.{build}")));
        assert!(revisions.iter().all(|r| r.created_by == "manager"));
    });
}

#[test]
fn export_is_canonical_and_round_trips_byte_for_byte() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let res = app.get("/api/v1/pipelines/space-game-web/export");
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/yaml")
        );
        let first = res.text().unwrap();
        assert!(first.contains("pipeline: space-game-web"));
        let (status, v) = json(app.import(&first));
        assert_eq!(status, 200);
        assert_eq!(
            v["unchanged"], true,
            "re-importing the export changes nothing"
        );
        let second = app
            .get("/api/v1/pipelines/space-game-web/export")
            .text()
            .unwrap();
        assert_eq!(first, second);
    });
}

#[test]
fn a_broken_definition_is_refused_with_its_place_and_changes_nothing() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let broken = SPEC_PIPELINE
            .replace("1.0.{build}", "3.0.{build}")
            .replace("America/Los_Angeles", "America/Los_Angles");
        let (status, v) = json(app.import(&broken));
        assert_eq!(status, 422, "{v}");
        assert_eq!(error_code(&v), "invalid");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("request body:18:"), "{message}");
        assert!(message.contains("timezone"), "{message}");
        assert!(message.contains("America/Los_Angles"), "{message}");
        let (_, v) = json(app.get("/api/v1/pipelines/space-game-web"));
        assert_eq!(v["revision"], 1);
        assert_eq!(v["version_template"], "1.0.{build}");

        let (status, v) = json(app.import("pipeline: [unclosed"));
        assert_eq!(status, 422, "{v}");
        let (status, v) = json(app.import("   "));
        assert_eq!(status, 400, "{v}");
    });
}

/// Issue 12 (3): costly definitions are refused at once with the limit
/// they break, and the server keeps answering while they are read.
#[test]
fn huge_definitions_are_refused_naming_the_limit() {
    each_backend(|app| {
        let mut keys = String::from(
            "pipeline: big\nsource: { repo: ./a }\nversion: \"1.{build}\"\nstages: [ { name: dev } ]\nvariables:\n",
        );
        for i in 0..40_000 {
            keys.push_str(&format!("  K{i}: v\n"));
        }
        let token = app.token("mia", Role::ReleaseManager);
        let import = |yaml: &str| {
            json(
                app.client
                    .post(app.url("/api/v1/pipelines"))
                    .bearer_auth(&token)
                    .header("Content-Type", "application/yaml")
                    .body(yaml.to_string())
                    .send()
                    .unwrap(),
            )
        };
        // Eight at once, as the attacker sent them; /healthz answers meanwhile.
        std::thread::scope(|s| {
            let imports: Vec<_> = (0..8).map(|_| s.spawn(|| import(&keys))).collect();
            assert_eq!(app.get("/healthz").status(), 200);
            for import in imports {
                let (status, v) = import.join().unwrap();
                assert_eq!(status, 413, "[{}] {v}", app.backend);
                assert_eq!(error_code(&v), "payload_too_large");
                let message = v["error"]["message"].as_str().unwrap();
                assert!(message.contains("at most 256 KiB"), "{message}");
            }
        });
        let wide = format!(
            "pipeline: big\nsource: {{ repo: ./a }}\nversion: \"1.{{build}}\"\nstages: [ {{ name: dev }} ]\nvariables: {{ A: [{}] }}\n",
            vec!["1"; 30_000].join(",")
        );
        let (status, v) = import(&wide);
        assert_eq!(status, 422, "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("more than 20000 values"), "{message}");
        assert_eq!(app.get("/api/v1/pipelines/big").status(), 404);
    });
}

#[test]
fn changes_need_a_token_with_the_right_role() {
    each_backend(|app| {
        let post = |token: Option<&str>| {
            let mut req = app
                .client
                .post(app.url("/api/v1/pipelines"))
                .header("Content-Type", "application/yaml")
                .body(SPEC_PIPELINE.to_string());
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            json(req.send().unwrap())
        };
        let (status, v) = post(None);
        assert_eq!(status, 401);
        assert_eq!(error_code(&v), "unauthorized");
        let (status, v) = post(Some("slw_bogus"));
        assert_eq!(status, 401, "{v}");
        let viewer = app.token("tim", Role::Viewer);
        let (status, v) = post(Some(&viewer));
        assert_eq!(status, 403);
        assert_eq!(error_code(&v), "forbidden");
        let deployer = app.token("andy", Role::Deployer);
        assert_eq!(post(Some(&deployer)).0, 403);
        let manager = app.token("mara", Role::ReleaseManager);
        assert_eq!(post(Some(&manager)).0, 201);
        let (status, _) = json(app.get("/api/v1/pipelines"));
        assert_eq!(status, 200);
    });
}

#[test]
fn releases_have_the_spec_shape_and_paginate() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        seed_releases(
            app,
            "space-game-web",
            5,
            |_| "main".into(),
            |n| {
                if n == 5 {
                    vec![("dev", Succeeded)]
                } else {
                    vec![]
                }
            },
        );
        let (status, v) = json(app.get("/api/v1/pipelines/space-game-web/releases/1.0.5"));
        assert_eq!(status, 200);
        for key in [
            "pipeline",
            "version",
            "commit",
            "branch",
            "created_at",
            "artifacts",
            "deployments",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["artifacts"][0]["path"], "dist/app.js");
        assert_eq!(v["artifacts"][0]["sha256"], format!("{:064x}", 5));
        assert_eq!(v["artifacts"][0]["size"], 1005);
        let d = &v["deployments"][0];
        for key in [
            "id",
            "pipeline",
            "release",
            "stage",
            "state",
            "trigger",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
        ] {
            assert!(d.get(key).is_some(), "{key} missing in {d}");
        }
        assert_eq!(d["state"], "succeeded");
        assert_eq!(d["release"], "1.0.5");
        let created = v["created_at"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(created).is_ok() && created.ends_with('Z'),
            "{created}"
        );

        let (_, page1) = json(app.get("/api/v1/pipelines/space-game-web/releases?limit=2"));
        let versions: Vec<&str> = page1["releases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, vec!["1.0.5", "1.0.4"]);
        let next = page1["next"].as_str().unwrap();
        let (_, page2) = json(app.get(next));
        let versions: Vec<&str> = page2["releases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, vec!["1.0.3", "1.0.2"]);

        let (status, v) = json(app.get("/api/v1/pipelines/space-game-web/releases?limit=0"));
        assert_eq!(status, 400);
        assert_eq!(error_code(&v), "bad_request");
        let (status, v) = json(app.get("/api/v1/pipelines/space-game-web/releases?bogus=1"));
        assert_eq!(status, 400, "{v}");
        let (status, v) = json(app.get("/api/v1/pipelines/space-game-web/releases/0.0.0"));
        assert_eq!(status, 404);
        assert_eq!(error_code(&v), "not_found");
        let (status, v) = json(app.get("/api/v1/nothing/here"));
        assert_eq!(status, 404);
        assert_eq!(error_code(&v), "not_found");
    });
}

#[test]
fn openapi_describes_the_routes() {
    each_backend(|app| {
        let (status, v) = json(app.get("/api/v1/openapi.json"));
        assert_eq!(status, 200);
        let paths = v["paths"].as_object().unwrap();
        for p in [
            "/api/v1/pipelines",
            "/api/v1/pipelines/{pipeline}",
            "/api/v1/pipelines/{pipeline}/export",
            "/api/v1/pipelines/{pipeline}/releases",
            "/api/v1/pipelines/{pipeline}/releases/{version}",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        assert!(v["components"]["schemas"].get("ReleaseDto").is_some());
    });
}
