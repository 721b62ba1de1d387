//! Webhook deliveries: a verified delivery id is accepted once, on both
//! databases, also when two requests race (the loser's transaction stays
//! usable on PostgreSQL).

use std::sync::{Arc, Barrier};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use slipway::domain::webhook::{self, Headers, Provider, WebhookEvent};
use slipway::engine::secrets;
use slipway::storage::{self, StorageError, webhooks};

use crate::helpers::{SPEC_PIPELINE, TestApp, each_backend};

fn pipeline_id(app: &TestApp, name: &str) -> i64 {
    let mut conn = app.conn();
    storage::find_pipeline(&mut conn, name).unwrap().unwrap().id
}

#[test]
fn a_delivery_is_recorded_once() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let other_yaml = SPEC_PIPELINE.replace("space-game", "other");
        let res = app.import(&other_yaml);
        assert_eq!(res.status(), 201, "{}", res.text().unwrap());
        let p = pipeline_id(app, "space-game-web");
        let q = pipeline_id(app, "other-web");
        let mut conn = app.conn();
        assert!(webhooks::record_delivery(&mut conn, p, "github", "d-1").unwrap());
        assert!(!webhooks::record_delivery(&mut conn, p, "github", "d-1").unwrap());
        // Another provider or pipeline is another delivery.
        assert!(webhooks::record_delivery(&mut conn, p, "gitlab", "d-1").unwrap());
        assert!(webhooks::record_delivery(&mut conn, q, "github", "d-1").unwrap());

        // Inside the caller's transaction; rolled back, it is forgotten.
        let result: Result<(), StorageError> = storage::write_transaction(&mut conn, |conn| {
            assert!(webhooks::record_delivery(conn, p, "github", "d-2")?);
            assert!(!webhooks::record_delivery(conn, p, "github", "d-2")?);
            Err(StorageError::NotFound)
        });
        assert!(result.is_err());
        assert!(webhooks::record_delivery(&mut conn, p, "github", "d-2").unwrap());

        let pruned =
            webhooks::prune_deliveries(&mut conn, storage::now() + chrono::TimeDelta::seconds(1))
                .unwrap();
        assert_eq!(pruned, 4);
        assert!(webhooks::record_delivery(&mut conn, p, "github", "d-1").unwrap());
    });
}

#[test]
fn racing_deliveries_are_accepted_once_and_leave_transactions_usable() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let p = pipeline_id(app, "space-game-web");
        let racers = 3;
        let barrier = Arc::new(Barrier::new(racers));
        let handles: Vec<_> = (0..racers)
            .map(|i| {
                let db = app.db.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut conn = db.get().unwrap();
                    barrier.wait();
                    storage::write_transaction(&mut conn, |conn| {
                        let first = webhooks::record_delivery(conn, p, "generic", "race")?;
                        // Hold the row uncommitted, so the others' inserts meet it.
                        std::thread::sleep(Duration::from_millis(200));
                        // The transaction is still usable after a lost race.
                        storage::append_audit(
                            conn,
                            &format!("racer-{i}"),
                            "webhook.test",
                            "pipeline:space-game-web",
                            if first { "first" } else { "repeat" },
                        )?;
                        Ok::<bool, StorageError>(first)
                    })
                })
            })
            .collect();
        let results: Vec<bool> = handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        assert_eq!(
            results.iter().filter(|first| **first).count(),
            1,
            "[{}] {results:?}",
            app.backend
        );
        let mut conn = app.conn();
        let audit = storage::list_audit(&mut conn, None, 100).unwrap();
        assert_eq!(
            audit.iter().filter(|a| a.action == "webhook.test").count(),
            racers
        );
    });
}

/// What the hook route does, with the stored secret: verify with the value
/// of `source.webhook_secret`, parse, record the delivery.
#[test]
fn verify_with_the_stored_webhook_secret() {
    each_backend(|app| {
        let yaml = SPEC_PIPELINE.replace(
            "branch: main }",
            "branch: main, webhook_secret: \"${{ secrets.HOOK }}\" }",
        );
        assert_eq!(app.import(&yaml).status(), 201);
        let p = pipeline_id(app, "space-game-web");
        let mut conn = app.conn();
        secrets::set_secret(
            &mut conn,
            &app.secret_key,
            "space-game-web",
            "HOOK",
            &SecretString::from("s3cret"),
            "test",
        )
        .unwrap();
        let definition = slipway::engine::pipelines::load(&mut conn, "space-game-web")
            .unwrap()
            .definition;
        let reference = definition.source.webhook_secret.unwrap();
        let secret = secrets::resolve_secret(&mut conn, &app.secret_key, p, reference.name())
            .unwrap()
            .unwrap();

        let body =
            br#"{"ref": "refs/heads/main", "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}"#;
        let headers: Headers = [
            ("X-Slipway-Signature", webhook::sign(b"s3cret", body)),
            ("X-Slipway-Delivery", "abc".to_string()),
        ]
        .into_iter()
        .collect();
        let provider: Provider = "generic".parse().unwrap();
        webhook::verify(provider, secret.expose_secret().as_bytes(), &headers, body).unwrap();
        let forged: Headers = [("X-Slipway-Signature", webhook::sign(b"guess", body))]
            .into_iter()
            .collect();
        assert!(
            webhook::verify(provider, secret.expose_secret().as_bytes(), &forged, body)
                .unwrap_err()
                .is_unauthorized()
        );
        let WebhookEvent::Push(push) = webhook::parse(provider, &headers, body).unwrap() else {
            panic!("a push");
        };
        assert_eq!(push.branch.as_deref(), Some("main"));
        let id = webhook::delivery_id(provider, &headers).unwrap();
        assert!(webhooks::record_delivery(&mut conn, p, provider.as_str(), &id).unwrap());
        assert!(!webhooks::record_delivery(&mut conn, p, provider.as_str(), &id).unwrap());
    });
}
