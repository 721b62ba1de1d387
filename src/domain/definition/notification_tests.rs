//! `notifications:` of a definition: parsing, located errors and the
//! canonical export.

use super::yaml::{parse_definition, to_canonical_yaml};
use super::*;

const BASE: &str = "\
pipeline: shop
source: { repo: ./shop }
version: \"1.0.{build}\"
stages:
  - name: dev
    tasks: [ { shell: ./deploy.sh } ]
";

fn with_notifications(block: &str) -> String {
    format!("{BASE}notifications:\n{block}")
}

#[track_caller]
fn assert_error(yaml: &str, line: usize, column: usize, field: &str, needle: &str) {
    let errors = match parse_definition(yaml, "shop.yaml") {
        Ok(def) => panic!("expected an error, parsed {def:#?}"),
        Err(e) => e.0,
    };
    let e = &errors[0];
    assert_eq!(
        (e.line, e.column, e.field.as_str()),
        (line, column, field),
        "wrong place for {e} (all: {errors:#?})"
    );
    assert!(
        e.message.contains(needle),
        "message {:?} lacks {needle:?}",
        e.message
    );
}

#[test]
fn parses_with_defaults_and_every_field() {
    let yaml = with_notifications(
        "  - name: team-chat
    url: \"http://127.0.0.1:9000/hook\"
    format: slack
    secret: \"${{ secrets.NOTIFY_KEY }}\"
    events: [approval_expiring, approval_requested]
  - name: audit-sink
    url: https://sink.example.com/slipway
",
    );
    let def = parse_definition(&yaml, "shop.yaml").unwrap();
    assert_eq!(
        def.notifications,
        vec![
            Notification {
                name: "team-chat".into(),
                url: "http://127.0.0.1:9000/hook".into(),
                format: NotificationFormat::Slack,
                secret: Some(SecretRef::new("NOTIFY_KEY").unwrap()),
                // Canonical order, whatever the order written.
                events: vec![
                    NotificationEvent::ApprovalRequested,
                    NotificationEvent::ApprovalExpiring
                ],
            },
            Notification {
                name: "audit-sink".into(),
                url: "https://sink.example.com/slipway".into(),
                format: NotificationFormat::Generic,
                secret: None,
                events: NotificationEvent::ALL.to_vec(),
            },
        ]
    );
    assert!(
        parse_definition(BASE, "shop.yaml")
            .unwrap()
            .notifications
            .is_empty()
    );
}

#[test]
fn export_is_canonical_and_round_trips() {
    let yaml = with_notifications(
        "  - { name: b, url: 'https://b.example/x', format: generic, events: [approval_decided, approval_requested, approval_expiring] }
  - { url: 'http://a.example/hook', events: [approval_decided], secret: '${{secrets.K}}', name: a, format: slack }
",
    );
    let def = parse_definition(&yaml, "shop.yaml").unwrap();
    let exported = to_canonical_yaml(&def);
    assert!(
        exported.ends_with(
            "notifications:
- name: b
  url: https://b.example/x
- name: a
  url: http://a.example/hook
  format: slack
  secret: ${{ secrets.K }}
  events:
  - approval_decided
"
        ),
        "{exported}"
    );
    let again = parse_definition(&exported, "out.yaml").unwrap();
    assert_eq!(again, def);
    assert_eq!(to_canonical_yaml(&again), exported);
    let json = serde_json::to_string(&def).unwrap();
    let from_json: PipelineDefinition = serde_json::from_str(&json).unwrap();
    assert_eq!(from_json, def);
    // No notifications: no key.
    let plain = to_canonical_yaml(&parse_definition(BASE, "shop.yaml").unwrap());
    assert!(!plain.contains("notifications"), "{plain}");
}

#[test]
fn errors_are_located() {
    assert_error(
        &with_notifications("  - name: chat\n    url: ftp://x.example/\n"),
        9,
        10,
        "notifications[0].url",
        "must start with http:// or https://",
    );
    assert_error(
        &with_notifications("  - name: chat\n    url: http://x.example/\n    formt: slack\n"),
        10,
        5,
        "notifications[0].formt",
        "unknown field `formt` (did you mean `format`?)",
    );
    assert_error(
        &with_notifications("  - name: chat\n    url: http://x.example/\n    format: teams\n"),
        10,
        13,
        "notifications[0].format",
        "unknown notification format `teams`; expected one of `generic`, `slack`",
    );
    assert_error(
        &with_notifications(
            "  - name: chat\n    url: http://x.example/\n    events: [approval_requested, approval_rejected]\n",
        ),
        10,
        34,
        "notifications[0].events[1]",
        "unknown event `approval_rejected`",
    );
    assert_error(
        &with_notifications("  - name: chat\n    url: http://x.example/\n    events: []\n"),
        10,
        13,
        "notifications[0].events",
        "at least one event",
    );
    assert_error(
        &with_notifications("  - name: chat\n    url: http://x.example/\n    secret: hunter2\n"),
        10,
        13,
        "notifications[0].secret",
        "secrets.NAME",
    );
    assert_error(
        &with_notifications("  - name: chat\n"),
        8,
        5,
        "notifications[0].url",
        "missing required field `url`",
    );
    assert_error(
        &with_notifications("  - name: Team Chat\n    url: http://x.example/\n"),
        8,
        11,
        "notifications[0].name",
        "lower-case",
    );
    assert_error(
        &with_notifications(
            "  - name: chat\n    url: http://x.example/\n  - name: chat\n    url: http://y.example/\n",
        ),
        10,
        11,
        "notifications[1].name",
        "duplicate notification name `chat` (first declared on line 8)",
    );
    assert_error(
        &format!("{BASE}notifications: {{ name: chat }}\n"),
        7,
        16,
        "notifications",
        "expected a list of notifications",
    );
}
