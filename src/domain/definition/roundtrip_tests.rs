//! Property test: for generated valid definitions `d`,
//! `parse(export(d)) == d` and export is a fixed point.
//!
//! A small deterministic generator (no extra dependencies) covers every
//! variant and awkward strings that YAML must quote.

use std::collections::BTreeMap;

use super::yaml::{parse_definition, to_canonical_yaml};
use super::*;
use crate::domain::{Cron, Schedule};

/// A tiny linear congruential generator: deterministic and good enough here.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Text that YAML finds awkward: numbers, booleans, nulls, indicators,
    /// quotes, newlines, leading and trailing spaces, unicode.
    fn text(&mut self) -> String {
        const PARTS: &[&str] = &[
            "deploy",
            "123",
            "1.5",
            "true",
            "yes",
            "no",
            "on",
            "null",
            "~",
            "-",
            "- x",
            "a: b",
            "#x",
            " lead",
            "trail ",
            "'q'",
            "\"dq\"",
            "{a}",
            "[b]",
            "${{ secrets.X }}",
            "*star",
            "&amp",
            "!bang",
            "%pct",
            "@at",
            "`tick`",
            "é✓",
            "0x10",
            "0o7",
            ".inf",
            "1e3",
            "|",
            ">",
            "a\nb",
            "\n",
            "tab\there",
            "\\back",
            "x:",
            "?q",
            ",c",
        ];
        let n = 1 + self.below(3);
        let mut out = String::new();
        for _ in 0..n {
            out.push_str(self.pick::<&str>(PARTS));
        }
        if out.trim().is_empty() {
            out.push('x');
        }
        out
    }

    fn name(&mut self, prefix: &str) -> String {
        format!("{prefix}{}", self.below(1000))
    }

    fn duration(&mut self) -> Duration {
        Duration::from_secs(*self.pick(&[1, 59, 60, 90, 3600, 5400, 86_400, 93_784, 604_800]))
    }

    fn env(&mut self) -> BTreeMap<String, String> {
        (0..self.below(3))
            .map(|i| (format!("VAR_{i}"), self.text()))
            .collect()
    }

    fn branches(&mut self) -> BranchFilter {
        BranchFilter {
            include: (0..self.below(3))
                .map(|i| format!("release/{i}*"))
                .collect(),
            exclude: (0..self.below(2)).map(|i| format!("tmp/{i}**")).collect(),
        }
    }

    fn approvers(&mut self, min: usize) -> Vec<Approver> {
        (0..min + self.below(3))
            .map(|i| {
                if self.chance(50) {
                    Approver::Group(format!("team{i}"))
                } else {
                    Approver::User(format!("user.{i}@example.com"))
                }
            })
            .collect()
    }

    fn json(&mut self, depth: usize) -> serde_json::Value {
        use serde_json::json;
        match self.below(if depth > 2 { 5 } else { 7 }) {
            0 => json!(null),
            1 => json!(self.chance(50)),
            2 => json!(self.next() as i64 - (1 << 30)),
            3 => json!(0.25),
            4 => json!(self.text()),
            5 => {
                serde_json::Value::Array((0..self.below(3)).map(|_| self.json(depth + 1)).collect())
            }
            _ => serde_json::Value::Object(
                (0..self.below(3))
                    .map(|i| (format!("k{i}"), self.json(depth + 1)))
                    .collect(),
            ),
        }
    }

    fn with(&mut self) -> serde_json::Value {
        if self.chance(30) {
            serde_json::Value::Object(serde_json::Map::new())
        } else {
            serde_json::Value::Object(
                (0..1 + self.below(3))
                    .map(|i| (format!("k{i}"), self.json(0)))
                    .collect(),
            )
        }
    }

    fn task(&mut self, apps: &[App]) -> TaskSpec {
        let kind = match self.below(if apps.is_empty() { 3 } else { 5 }) {
            0 => TaskKind::Shell {
                script: self.text(),
            },
            1 => TaskKind::Http {
                method: self.pick(&["GET", "POST", "HEAD"]).to_string(),
                url: format!("https://x.example/{}", self.below(9)),
                expect_status: *self.pick(&[200, 204, 302, 500]),
            },
            2 => TaskKind::Extension {
                name: self.name("ext-"),
                with: self.with(),
            },
            3 => {
                let app = self.pick(apps).clone();
                TaskKind::DeploySlot {
                    slot: self.pick(&app.slots).clone(),
                    app: app.name,
                }
            }
            _ => {
                let app = self.pick(apps).clone();
                if app.slots.len() < 2 {
                    TaskKind::DeploySlot {
                        slot: app.slots[0].clone(),
                        app: app.name,
                    }
                } else {
                    TaskKind::SwapSlots {
                        app: app.name,
                        from: app.slots[0].clone(),
                        to: app.slots[1].clone(),
                    }
                }
            }
        };
        TaskSpec {
            name: self.chance(40).then(|| self.text()),
            kind,
            env: self.env(),
            timeout: self.chance(30).then(|| self.duration()),
        }
    }

    fn check(&mut self) -> GateCheck {
        let kind = match self.below(4) {
            0 => CheckKind::Http {
                method: self.pick(&["GET", "POST"]).to_string(),
                url: "http://health.example/ok".to_owned(),
                headers: (0..self.below(2))
                    .map(|i| (format!("X-H{i}"), self.text()))
                    .collect(),
                body: self.chance(30).then(|| self.text()),
                timeout: self.duration(),
                success: if self.chance(50) {
                    defaults::HTTP_SUCCESS.to_owned()
                } else {
                    // Success expressions must compile (CEL), so they come from a list.
                    self.pick(&[
                        "status == 200",
                        "status < 500 && body.ok == true",
                        "body.msg == 'a: b # c'",
                        "status in [200, 204] || headers['x-ok'] == \"yes\"",
                    ])
                    .to_string()
                },
            },
            1 => CheckKind::Prometheus {
                server: "http://prom:9090".to_owned(),
                query: self.text(),
                threshold: Threshold {
                    op: *self.pick(&[
                        CompareOp::Lt,
                        CompareOp::Le,
                        CompareOp::Gt,
                        CompareOp::Ge,
                        CompareOp::Eq,
                        CompareOp::Ne,
                    ]),
                    value: *self.pick(&[0.0, 0.01, -3.5, 1e-7, 250.0, 1e21]),
                },
            },
            2 => CheckKind::Command { run: self.text() },
            _ => CheckKind::Extension {
                name: self.name("chk"),
                with: self.with(),
            },
        };
        GateCheck {
            name: self.chance(50).then(|| self.text()),
            kind,
            consecutive_successes: 1 + self.below(3) as u32,
            on_inconclusive: if self.chance(50) {
                InconclusivePolicy::Fail
            } else {
                InconclusivePolicy::Ask
            },
        }
    }

    fn notifications(&mut self) -> Vec<Notification> {
        (0..self.below(3))
            .map(|i| {
                let mut events: Vec<NotificationEvent> = NotificationEvent::ALL
                    .into_iter()
                    .filter(|_| self.chance(60))
                    .collect();
                if events.is_empty() {
                    events = NotificationEvent::ALL.to_vec();
                }
                Notification {
                    name: format!("target-{i}"),
                    url: format!("https://hooks.example.com/{}", self.below(1000)),
                    format: if self.chance(50) {
                        NotificationFormat::Slack
                    } else {
                        NotificationFormat::Generic
                    },
                    secret: self
                        .chance(50)
                        .then(|| SecretRef::new("NOTIFY_KEY").unwrap()),
                    events,
                }
            })
            .collect()
    }

    fn gate(&mut self) -> Option<GatePolicy> {
        self.chance(40).then(|| GatePolicy {
            delay: if self.chance(50) {
                Duration::ZERO
            } else {
                self.duration()
            },
            interval: self.duration(),
            timeout: self.duration(),
            steady: if self.chance(50) {
                Duration::ZERO
            } else {
                self.duration()
            },
            checks: (0..1 + self.below(3)).map(|_| self.check()).collect(),
        })
    }

    fn approval(&mut self) -> Option<ApprovalPolicy> {
        self.chance(40).then(|| ApprovalPolicy {
            approvers: self.approvers(1),
            policy: *self.pick(&[
                ApprovalMode::Any,
                ApprovalMode::All,
                ApprovalMode::AtLeast(2),
            ]),
            timeout: if self.chance(50) {
                defaults::APPROVAL_TIMEOUT
            } else {
                self.duration()
            },
            fresh_sign_in: self.chance(30).then(|| self.duration()),
            requester_can_approve: self.chance(30),
            exclude_authors: self.chance(30),
        })
    }

    fn definition(&mut self) -> PipelineDefinition {
        let apps: Vec<App> = (0..self.below(3))
            .map(|i| App {
                name: AppName::parse(format!("app-{i}")).unwrap(),
                start: self.text(),
                health: if self.chance(50) {
                    "/".to_owned()
                } else {
                    "/health z".to_owned()
                },
                slots: (0..1 + self.below(3))
                    .map(|j| SlotName::parse(format!("s{j}")).unwrap())
                    .collect(),
                settings: (0..self.below(3))
                    .map(|k| {
                        (
                            format!("SET_{k}"),
                            Setting {
                                value: self.text(),
                                sticky: self.chance(50),
                            },
                        )
                    })
                    .collect(),
            })
            .collect();
        let mut stages: Vec<Stage> = Vec::new();
        for i in 0..1 + self.below(4) {
            let trigger = match self.below(4) {
                0 => Trigger::Manual,
                1 => Trigger::After {
                    upstream: Upstream::Build,
                    branches: self.branches(),
                },
                2 if !stages.is_empty() => Trigger::After {
                    upstream: Upstream::Stage(self.pick(&stages).name.clone()),
                    branches: self.branches(),
                },
                _ => Trigger::Schedule(Schedule {
                    cron: Cron::parse(self.pick::<&str>(&[
                        "0 0 3 * * *",
                        "*/10 * * * * *",
                        "0 30 2 * * MON-FRI",
                    ]))
                    .unwrap(),
                    timezone: *self.pick(&[
                        chrono_tz::UTC,
                        chrono_tz::Europe::Berlin,
                        chrono_tz::America::Los_Angeles,
                    ]),
                }),
            };
            let environment = match self.below(4) {
                0 => None,
                1 => Some(Environment::Host),
                2 => Some(Environment::Agent {
                    name: self.name("agent-"),
                }),
                _ if !apps.is_empty() => {
                    let app = self.pick(&apps).clone();
                    Some(Environment::Slot {
                        name: self.pick(&app.slots).clone(),
                        app: app.name,
                    })
                }
                _ => None,
            };
            stages.push(Stage {
                name: StageName::parse(format!("stage-{i}")).unwrap(),
                trigger,
                environment,
                variables: self.env(),
                approvals: Approvals {
                    before: self.approval(),
                    after: self.approval(),
                    order: if self.chance(50) {
                        ApprovalOrder::BeforeGates
                    } else {
                        ApprovalOrder::AfterGates
                    },
                },
                gates: Gates {
                    before: self.gate(),
                    after: self.gate(),
                },
                tasks: (0..self.below(3)).map(|_| self.task(&apps)).collect(),
                queue: QueuePolicy {
                    parallel: 1 + self.below(3) as u32,
                    policy: if self.chance(50) {
                        QueueMode::LatestOnly
                    } else {
                        QueueMode::Sequence
                    },
                },
                catch_up: self.chance(30),
                deployers: self.approvers(0),
            });
        }
        PipelineDefinition {
            pipeline: PipelineName::parse(self.name("p")).unwrap(),
            description: self.chance(50).then(|| self.text()),
            source: Source {
                repo: self.text(),
                branch: if self.chance(50) {
                    "main".to_owned()
                } else {
                    "release/2.x".to_owned()
                },
                branches: self.branches(),
                secrets_for: self
                    .chance(30)
                    .then(|| vec!["main".to_owned(), "release/*".to_owned()]),
                webhook_secret: self.chance(50).then(|| SecretRef::new("HOOK_1").unwrap()),
                poll: self.chance(50).then(|| self.duration()),
            },
            version: crate::domain::VersionTemplate::parse(*self.pick(&[
                "1.0.{build}",
                "{date}.{build}",
                "{tag}",
                "{branch}-{sha7}",
            ]))
            .unwrap(),
            variables: self.env(),
            build: Build {
                tasks: (0..self.below(3)).map(|_| self.task(&apps)).collect(),
                artifacts: (0..self.below(3)).map(|i| format!("dist/{i}/**")).collect(),
            },
            apps,
            stages,
            notifications: self.notifications(),
        }
    }
}

#[test]
fn generated_definitions_round_trip() {
    let mut generator = Gen(0x5eed);
    for case in 0..300 {
        let def = generator.definition();
        let yaml = to_canonical_yaml(&def);
        let parsed = match parse_definition(&yaml, "generated.yaml") {
            Ok(parsed) => parsed,
            Err(e) => panic!("case {case}: export does not parse: {e}\n{yaml}"),
        };
        assert_eq!(parsed, def, "case {case}:\n{yaml}");
        assert_eq!(to_canonical_yaml(&parsed), yaml, "case {case}");
        let json = serde_json::to_string(&def).unwrap();
        let from_json: PipelineDefinition = serde_json::from_str(&json).unwrap();
        assert_eq!(from_json, def, "case {case}: {json}");
    }
}
