//! Reading and writing the YAML form of a [`PipelineDefinition`].

pub use super::errors::{DefinitionError, DefinitionErrors};
use super::parse::Reader;
use super::tree::{Node, parse_yaml};
use super::{PipelineDefinition, export};

/// The pipeline definition example of SPEC §3.
pub const EXAMPLE_YAML: &str = include_str!("../fixtures/space-game-web.yaml");

/// The largest definition accepted, in bytes (a large real pipeline is a
/// few kilobytes); checked before parsing.
pub const MAX_DEFINITION_BYTES: usize = 256 * 1024;

/// Why a definition of `len` bytes is refused.
pub fn definition_too_large(len: usize) -> String {
    format!(
        "the definition is {len} bytes; at most {} KiB ({MAX_DEFINITION_BYTES} bytes) is accepted",
        MAX_DEFINITION_BYTES / 1024
    )
}

/// Parses a pipeline definition; `file` names the source in error messages.
///
/// The cost is linear in the text and bounded: at most
/// [`MAX_DEFINITION_BYTES`] of text, 64 levels of nesting and
/// [`MAX_NODES`](super::tree::MAX_NODES) values after expanding aliases.
///
/// Every problem is reported with its 1-based line and column and the path
/// of the field (`stages[1].trigger.schedule.cron`), in file order.
pub fn parse_definition(yaml: &str, file: &str) -> Result<PipelineDefinition, DefinitionErrors> {
    if yaml.len() > MAX_DEFINITION_BYTES {
        return Err(DefinitionErrors(vec![DefinitionError {
            file: file.to_owned(),
            line: 1,
            column: 1,
            field: "(document)".to_owned(),
            message: definition_too_large(yaml.len()),
        }]));
    }
    let root = match parse_yaml(yaml) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return Err(DefinitionErrors(vec![DefinitionError {
                file: file.to_owned(),
                line: 1,
                column: 1,
                field: "(document)".to_owned(),
                message: "the definition is empty; expected a mapping with `pipeline`, `source`, \
                          `version` and `stages`"
                    .to_owned(),
            }]));
        }
        Err(e) => {
            return Err(DefinitionErrors(vec![DefinitionError {
                file: file.to_owned(),
                line: e.mark.line.max(1),
                column: e.mark.column.max(1),
                field: e.path,
                message: e.message,
            }]));
        }
    };
    from_node(&root, file)
}

/// Reads a definition from an already built tree.
pub(crate) fn from_node(root: &Node, file: &str) -> Result<PipelineDefinition, DefinitionErrors> {
    let mut reader = Reader::new(file);
    let definition = reader.definition(root);
    let mut errors = reader.errors;
    match definition {
        Some(definition) if errors.is_empty() => Ok(definition),
        _ => {
            if errors.is_empty() {
                errors.push(DefinitionError {
                    file: file.to_owned(),
                    line: 1,
                    column: 1,
                    field: "(document)".to_owned(),
                    message: "the definition is not valid".to_owned(),
                });
            }
            errors.sort_by_key(|e| (e.line, e.column));
            errors.dedup();
            Err(DefinitionErrors(errors))
        }
    }
}

/// Writes a definition in its canonical YAML form: fixed key order, defaults
/// left out, compact forms. `parse_definition(&to_canonical_yaml(d))` gives `d` back.
pub fn to_canonical_yaml(def: &PipelineDefinition) -> String {
    // Serializing a tree of strings, numbers, booleans and mappings cannot fail.
    yaml_serde::to_string(&export::definition(def)).unwrap_or_default()
}

#[cfg(test)]
// Tests may unwrap: a panic is a failed test. (`allow`, not `expect`, so this
// stays quiet if clippy.toml sets `allow-unwrap-in-tests`.)
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::domain::{
        ApprovalMode, Approver, CheckKind, CompareOp, Duration, Environment, TaskKind, Trigger,
        Upstream,
    };
    use chrono::TimeZone;

    const EVERYTHING: &str = include_str!("../fixtures/everything.yaml");

    /// Issue 12 (3): huge mappings are refused by their size, quickly,
    /// naming the limit; a mapping just under the limits parses.
    #[test]
    fn huge_definitions_are_refused_naming_the_limit() {
        let mut keys = String::from(
            "pipeline: p\nsource: { repo: ./a }\nversion: \"1.{build}\"\nstages: [ { name: dev } ]\nvariables:\n",
        );
        for i in 0..40_000 {
            keys.push_str(&format!("  K{i}: v\n"));
        }
        // The attack's 469 KB: refused by its size before parsing.
        let errors = parse_definition(&keys, "big.yaml").unwrap_err();
        let first = errors.first().unwrap();
        assert!(first.message.contains("at most 256 KiB"), "{first}");
        assert_eq!((first.line, first.field.as_str()), (1, "(document)"));
        // Small text, many values: refused by the node count.
        let list = format!(
            "pipeline: p\nsource: {{ repo: ./a }}\nversion: \"1.{{build}}\"\nstages: [ {{ name: dev }} ]\nvariables: {{ A: [{}] }}\n",
            vec!["1"; 30_000].join(",")
        );
        let errors = parse_definition(&list, "wide.yaml").unwrap_err();
        let first = errors.first().unwrap();
        assert!(first.message.contains("more than 20000 values"), "{first}");

        let mut many = String::from(
            "pipeline: p\nsource: { repo: ./a }\nversion: \"1.{build}\"\nstages: [ { name: dev } ]\nvariables:\n",
        );
        for i in 0..9_000 {
            many.push_str(&format!("  K{i}: v\n"));
        }
        let started = std::time::Instant::now();
        let def = parse_definition(&many, "many.yaml").unwrap();
        eprintln!("9000 variables parsed in {:?}", started.elapsed());
        assert_eq!(def.variables.len(), 9_000);
        many.push_str("  K17: again\n");
        let errors = parse_definition(&many, "many.yaml").unwrap_err();
        assert!(
            errors
                .first()
                .unwrap()
                .message
                .contains("duplicate key `K17` (first given on line 23)"),
            "{errors}"
        );
    }

    /// A small valid definition; tests replace parts of it.
    const BASE: &str = "\
pipeline: shop
source: { repo: ./shop }
version: \"1.0.{build}\"
apps:
  - name: web
    start: ./run.sh
    slots: [staging, production]
stages:
  - name: dev
    trigger: { after: build }
    tasks: [ { deploy_slot: { app: web, slot: staging } } ]
  - name: prod
    trigger: manual
    tasks: [ { swap_slots: { app: web, from: staging, to: production } } ]
";

    /// BASE with `old` replaced by `new` (which must occur).
    fn with(old: &str, new: &str) -> String {
        assert!(BASE.contains(old), "BASE does not contain {old:?}");
        BASE.replacen(old, new, 1)
    }

    fn errors(yaml: &str) -> Vec<DefinitionError> {
        match parse_definition(yaml, "shop.yaml") {
            Ok(def) => panic!("expected an error, parsed {def:#?}"),
            Err(e) => e.0,
        }
    }

    /// Asserts the first error's position, field and message.
    #[track_caller]
    fn assert_error(yaml: &str, line: usize, column: usize, field: &str, needle: &str) {
        let all = errors(yaml);
        let e = &all[0];
        assert_eq!(
            (e.line, e.column, e.field.as_str()),
            (line, column, field),
            "wrong place for {e} (all: {all:#?})"
        );
        assert!(
            e.message.contains(needle),
            "message {:?} lacks {needle:?}",
            e.message
        );
        assert_eq!(e.file, "shop.yaml");
    }

    #[test]
    fn base_is_valid() {
        let def = parse_definition(BASE, "shop.yaml").unwrap();
        assert_eq!(def.stages.len(), 2);
        assert_eq!(def.source.branch, "main");
    }

    #[test]
    fn spec_example_parses() {
        let def = parse_definition(EXAMPLE_YAML, "space-game-web.yaml").unwrap();
        assert_eq!(def.pipeline.as_str(), "space-game-web");
        assert_eq!(def.source.repo, "./space-game-web");
        assert_eq!(def.source.branch, "main");
        assert_eq!(def.version.as_str(), "1.0.{build}");
        assert_eq!(def.apps[0].slots.len(), 4);
        assert_eq!(def.apps[0].health, "/health");
        assert_eq!(def.build.artifacts, ["dist/**"]);
        let names: Vec<&str> = def.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["dev", "test", "preprod", "production"]);

        let dev = &def.stages[0];
        assert!(
            matches!(&dev.trigger, Trigger::After { upstream: Upstream::Build, branches } if branches.is_empty())
        );
        assert!(
            matches!(&dev.environment, Some(Environment::Slot { app, name }) if app == "space-game" && name == "dev")
        );

        let Trigger::Schedule(schedule) = &def.stages[1].trigger else {
            panic!("test is scheduled")
        };
        assert_eq!(schedule.cron.as_str(), "0 0 3 * * *");
        assert_eq!(schedule.timezone, chrono_tz::America::Los_Angeles);
        let from = chrono::Utc.with_ymd_and_hms(2027, 3, 13, 12, 0, 0).unwrap();
        let next = schedule.next_fires(from, 1);
        assert_eq!(next[0].to_rfc3339(), "2027-03-14T10:00:00+00:00");

        let preprod = def.stage("preprod").unwrap();
        assert_eq!(preprod.trigger, Trigger::Manual);
        let before = preprod.approvals.before.as_ref().unwrap();
        assert_eq!(before.approvers, [Approver::Group("qa".into())]);
        assert_eq!(before.policy, ApprovalMode::Any);
        assert_eq!(before.timeout, Duration::from_days(30));
        assert!(!before.requester_can_approve);

        let production = def.stage("production").unwrap();
        assert!(
            matches!(&production.trigger, Trigger::After { upstream: Upstream::Stage(s), .. } if s == "preprod")
        );
        let before = production.approvals.before.as_ref().unwrap();
        assert_eq!(before.timeout, Duration::from_days(7));
        assert_eq!(before.fresh_sign_in, Some(Duration::from_mins(15)));
        let gate = production.gates.before.as_ref().unwrap();
        assert_eq!(
            (gate.delay, gate.interval, gate.timeout, gate.steady),
            (
                Duration::from_mins(5),
                Duration::from_mins(5),
                Duration::from_hours(1),
                Duration::from_mins(10)
            )
        );
        let CheckKind::Http {
            method,
            url,
            success,
            ..
        } = &gate.checks[0].kind
        else {
            panic!("http check")
        };
        assert_eq!(
            (method.as_str(), url.as_str()),
            ("GET", "https://status.example.com/health")
        );
        assert_eq!(success, "status == 200 && body.status == 'healthy'");
        assert!(
            matches!(&production.tasks[0].kind, TaskKind::SwapSlots { from, to, .. } if from == "staging" && to == "production")
        );
        assert_eq!(production.queue, crate::domain::QueuePolicy::default());

        assert_eq!(
            def.previous_stage("production").unwrap().name.as_str(),
            "preprod"
        );
        assert!(def.previous_stage("dev").is_none());
        assert!(def.previous_stage("nope").is_none());
        assert!(def.stage("nope").is_none());
    }

    #[test]
    fn everything_parses() {
        let def = parse_definition(EVERYTHING, "everything.yaml").unwrap();
        assert_eq!(def.source.poll, Some(Duration::from_secs(90)));
        assert_eq!(
            def.source.webhook_secret.as_ref().unwrap().name(),
            "SHOP_HOOK"
        );
        assert_eq!(def.variables["RETRIES"], "3");
        assert!(def.apps[0].settings["DATABASE_URL"].sticky);
        assert!(!def.apps[0].settings["LOG_LEVEL"].sticky);
        assert!(def.source.branches.matches("release/1.2"));
        assert!(!def.source.branches.matches("release/old-1"));
        assert!(!def.source.branches.matches("feature/x"));
        let TaskKind::Extension { name, with } = &def.build.tasks[1].kind else {
            panic!("extension task")
        };
        assert_eq!(name, "lint");
        assert_eq!(
            with,
            &serde_json::json!({"strict": true, "paths": ["src", "tests"], "level": 2, "ratio": 0.5, "none": null})
        );
        let staging = def.stage("staging").unwrap();
        assert_eq!(
            staging.approvals.after.as_ref().unwrap().policy,
            ApprovalMode::AtLeast(2)
        );
        let check = &staging.gates.before.as_ref().unwrap().checks[0];
        let CheckKind::Prometheus { threshold, .. } = &check.kind else {
            panic!("prometheus check")
        };
        assert_eq!((threshold.op, threshold.value), (CompareOp::Lt, 0.01));
        assert_eq!(check.consecutive_successes, 3);
        let TaskKind::Http {
            method,
            expect_status,
            ..
        } = &def.stages[0].tasks[1].kind
        else {
            panic!("http task")
        };
        assert_eq!((method.as_str(), *expect_status), ("HEAD", 204));
    }

    /// parse(export(parse(x))) == parse(x), and export is a fixed point.
    #[track_caller]
    fn assert_round_trip(yaml: &str) {
        let first = parse_definition(yaml, "in.yaml").unwrap();
        let exported = to_canonical_yaml(&first);
        let second = parse_definition(&exported, "out.yaml")
            .unwrap_or_else(|e| panic!("export does not parse: {e}\n{exported}"));
        assert_eq!(second, first, "{exported}");
        assert_eq!(to_canonical_yaml(&second), exported);
        // The serde form (JSON) carries the same shape.
        let json = serde_json::to_string(&first).unwrap();
        let from_json: PipelineDefinition = serde_json::from_str(&json).unwrap();
        assert_eq!(from_json, first, "{json}");
    }

    #[test]
    fn canonical_export_round_trips() {
        for yaml in [EXAMPLE_YAML, EVERYTHING, BASE] {
            assert_round_trip(yaml);
        }
        assert_round_trip(&with(
            "version: \"1.0.{build}\"",
            "version: \"{tag}\"\ndescription: 'yes'",
        ));
        assert_round_trip(&with(
            "trigger: manual",
            "trigger: { schedule: { cron: \"@daily\" } }",
        ));
        assert_round_trip(&with(
            "trigger: manual",
            "trigger: manual\n    variables: { A: \"\", B: \"true\", C: \"0x10\", D: \"~\", E: \"- x\", F: \"a: b\", G: \"#c\" }",
        ));
        assert_round_trip(&with(
            "tasks: [ { swap",
            "tasks: [ { task: x, with: { n: 12345678901234567890, s: \"12\", l: [], m: {}, f: 1e3 } }, { swap",
        ));
    }

    #[test]
    fn canonical_export_is_compact() {
        let def = parse_definition(EXAMPLE_YAML, "space-game-web.yaml").unwrap();
        let out = to_canonical_yaml(&def);
        assert!(
            out.starts_with(
                "pipeline: space-game-web\nsource:\n  repo: ./space-game-web\nversion: "
            ),
            "{out}"
        );
        for needle in [
            "trigger: manual\n",
            "trigger:\n    after: build\n",
            "- group:qa\n",
            "timeout: 7d\n",
            "fresh_sign_in: 15m\n",
            "cron: 0 0 3 * * *\n",
            "timezone: America/Los_Angeles\n",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in\n{out}");
        }
        for absent in [
            "!",
            "policy: any",
            "interval:",
            "latest_only",
            "parallel",
            "branch: main",
            "30d",
        ] {
            assert!(!out.contains(absent), "unexpected {absent:?} in\n{out}");
        }
        // Durations are canonical.
        let def = parse_definition(
            &with(
                "trigger: manual",
                "trigger: manual\n    approvals: { before: { approvers: [a], timeout: 90m } }",
            ),
            "x",
        )
        .unwrap();
        assert!(to_canonical_yaml(&def).contains("timeout: 1h30m\n"));
    }

    // ----- errors: each names file, line, column and field ---------------

    #[test]
    fn yaml_syntax_error() {
        assert_error(
            &with("source: { repo: ./shop }", "source: { repo: ./shop"),
            3,
            8,
            "source",
            "YAML syntax error",
        );
        assert_error(
            &with("  - name: prod", "  -name: prod\n - x"),
            12,
            3,
            "stages",
            "YAML syntax error",
        );
    }

    #[test]
    fn duplicate_yaml_key() {
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: manual\n    trigger: manual",
            ),
            14,
            5,
            "stages[1].trigger",
            "duplicate key `trigger`",
        );
    }

    #[test]
    fn empty_and_non_mapping_documents() {
        assert_error("", 1, 1, "(document)", "empty");
        assert_error("# just a comment\n", 1, 1, "(document)", "empty");
        assert_error(
            "- a\n- b\n",
            1,
            1,
            "(document)",
            "expected a pipeline definition",
        );
    }

    #[test]
    fn unknown_keys() {
        assert_error(
            &format!("{BASE}colour: red\n"),
            15,
            1,
            "colour",
            "unknown field `colour`; expected one of `pipeline`",
        );
        assert_error(
            &with("    trigger: manual", "    trigers: manual"),
            13,
            5,
            "stages[1].trigers",
            "unknown field `trigers` (did you mean `trigger`?)",
        );
        assert_error(
            &with(
                "{ app: web, slot: staging }",
                "{ app: web, slot: staging, port: 1 }",
            ),
            11,
            56,
            "stages[0].tasks[0].deploy_slot.port",
            "unknown field `port`",
        );
        assert_error(
            &with(
                "source: { repo: ./shop }",
                "source: { repo: ./shop, brnch: x }",
            ),
            2,
            25,
            "source.brnch",
            "did you mean `branch`?",
        );
        assert_error(
            &with("{ after: build }", "{ after: build, when: now }"),
            10,
            30,
            "stages[0].trigger.when",
            "unknown field `when`",
        );
    }

    #[test]
    fn wrong_types() {
        assert_error(
            &with("slots: [staging, production]", "slots: staging"),
            7,
            12,
            "apps[0].slots",
            "expected a list of slot names, found a string",
        );
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: manual\n    queue: { parallel: many }",
            ),
            14,
            24,
            "stages[1].queue.parallel",
            "expected a whole number, found a string",
        );
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: manual\n    catch_up: maybe",
            ),
            14,
            15,
            "stages[1].catch_up",
            "expected `true` or `false`",
        );
        assert_error(
            &with("source: { repo: ./shop }", "source: ./shop"),
            2,
            9,
            "source",
            "expected a source mapping",
        );
        assert_error(
            &with("    trigger: manual", "    trigger: [manual]"),
            13,
            14,
            "stages[1].trigger",
            "found a list",
        );
        assert_error(
            &with("stages:", "variables: [a]\nstages:"),
            8,
            12,
            "variables",
            "expected a mapping of variables",
        );
        assert_error(
            &with("    trigger: manual", "    trigger: { branches: [main] }"),
            13,
            14,
            "stages[1].trigger",
            "`branches` filters an `after` trigger",
        );
        assert_error(
            &with("    trigger: manual", "    trigger: { every: 5m }"),
            13,
            16,
            "stages[1].trigger.every",
            "unknown trigger `every`",
        );
        assert_error(
            &with("    trigger: manual", "    trigger: sometimes"),
            13,
            14,
            "stages[1].trigger",
            "unknown trigger `sometimes`; expected `manual`",
        );
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: manual\n    environment: cloud",
            ),
            14,
            18,
            "stages[1].environment",
            "unknown environment `cloud`",
        );
    }

    #[test]
    fn missing_required_fields() {
        assert_error(
            &with("  - name: prod\n    trigger: manual", "  - trigger: manual"),
            12,
            5,
            "stages[1].name",
            "missing required field `name`",
        );
        assert_error(
            &with("source: { repo: ./shop }\n", ""),
            1,
            1,
            "source",
            "missing required field `source`",
        );
        assert_error(
            &with("source: { repo: ./shop }", "source: { branch: main }"),
            2,
            9,
            "source.repo",
            "missing required field `repo`",
        );
        assert_error(
            &with("  - name: dev", "  - name:"),
            9,
            5,
            "stages[0].name",
            "`name` needs a value",
        );
        assert_error(
            &with("{ app: web, slot: staging }", "{ app: web }"),
            11,
            29,
            "stages[0].tasks[0].deploy_slot.slot",
            "missing required field `slot`",
        );
    }

    #[test]
    fn invalid_cron() {
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: { schedule: { cron: \"0 0 3 * *\", timezone: UTC } }",
            ),
            13,
            34,
            "stages[1].trigger.schedule.cron",
            "six fields",
        );
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger:\n      schedule:\n        cron: 0 0 27 * * *",
            ),
            15,
            15,
            "stages[1].trigger.schedule.cron",
            "invalid cron expression `0 0 27 * * *`",
        );
    }

    #[test]
    fn unknown_time_zone() {
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: { schedule: { cron: \"0 0 3 * * *\", timezone: Mars/Base } }",
            ),
            13,
            59,
            "stages[1].trigger.schedule.timezone",
            "unknown time zone `Mars/Base`",
        );
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: { schedule: { cron: \"0 0 3 * * *\", timezone: europe/berlin } }",
            ),
            13,
            59,
            "stages[1].trigger.schedule.timezone",
            "did you mean `Europe/Berlin`?",
        );
    }

    #[test]
    fn bad_duration() {
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: manual\n    approvals: { before: { approvers: [alice], timeout: 7 days } }",
            ),
            14,
            57,
            "stages[1].approvals.before.timeout",
            "invalid duration `7 days`",
        );
        assert_error(
            &with(
                "source: { repo: ./shop }",
                "source: { repo: ./shop, poll: 5 }",
            ),
            2,
            31,
            "source.poll",
            "missing unit",
        );
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: manual\n    gates: { before: { interval: 0s, checks: [ { command: ./c } ] } }",
            ),
            14,
            34,
            "stages[1].gates.before.interval",
            "must be longer than 0s",
        );
    }

    #[test]
    fn invalid_names() {
        assert_error(
            &with("  - name: dev", "  - name: Dev"),
            9,
            11,
            "stages[0].name",
            "invalid stage name `Dev`",
        );
        assert_error(
            &with("pipeline: shop", "pipeline: my shop"),
            1,
            11,
            "pipeline",
            "invalid pipeline name `my shop`",
        );
        assert_error(
            &with("  - name: web", "  - name: web_app!"),
            5,
            11,
            "apps[0].name",
            "invalid app name",
        );
        assert_error(
            &with(
                "slots: [staging, production]",
                "slots: [staging, production, Blue]",
            ),
            7,
            34,
            "apps[0].slots[2]",
            "invalid slot name `Blue`",
        );
        assert_error(
            &with("  - name: dev", "  - name: build"),
            9,
            11,
            "stages[0].name",
            "reserved",
        );
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: manual\n    variables: { 1X: a }",
            ),
            14,
            18,
            "stages[1].variables.1X",
            "invalid name `1X`",
        );
    }

    #[test]
    fn duplicate_names() {
        assert_error(
            &with("  - name: prod", "  - name: dev"),
            12,
            11,
            "stages[1].name",
            "duplicate stage name `dev` (first declared on line 9)",
        );
        assert_error(
            &with(
                "stages:\n",
                "  - name: web\n    start: x\n    slots: [a]\nstages:\n",
            ),
            8,
            11,
            "apps[1].name",
            "duplicate app name `web` (first declared on line 5)",
        );
        assert_error(
            &with(
                "slots: [staging, production]",
                "slots: [staging, production, staging]",
            ),
            7,
            34,
            "apps[0].slots[2]",
            "duplicate slot name `staging`",
        );
    }

    #[test]
    fn after_must_name_an_earlier_stage() {
        assert_error(
            &with("{ after: build }", "{ after: prod }"),
            10,
            23,
            "stages[0].trigger.after",
            "`prod` is not a stage that comes before this one; expected `build` (this is the first stage)",
        );
        assert_error(
            &with("    trigger: manual", "    trigger: { after: qa }"),
            13,
            23,
            "stages[1].trigger.after",
            "`qa` is not a stage that comes before this one; expected `build` or an earlier stage: `dev`",
        );
        assert_error(
            &with("    trigger: manual", "    trigger: { after: prod }"),
            13,
            23,
            "stages[1].trigger.after",
            "cannot be triggered after itself",
        );
        let ok = parse_definition(
            &with("    trigger: manual", "    trigger: { after: dev }"),
            "x",
        )
        .unwrap();
        assert!(
            matches!(&ok.stages[1].trigger, Trigger::After { upstream: Upstream::Stage(s), .. } if s == "dev")
        );
    }

    #[test]
    fn unknown_apps_and_slots() {
        assert_error(
            &with(
                "{ app: web, slot: staging }",
                "{ app: webb, slot: staging }",
            ),
            11,
            36,
            "stages[0].tasks[0].deploy_slot.app",
            "unknown app `webb`; declared apps: `web`",
        );
        assert_error(
            &with("{ app: web, slot: staging }", "{ app: web, slot: stagin }"),
            11,
            47,
            "stages[0].tasks[0].deploy_slot.slot",
            "app `web` has no slot `stagin`; its slots: `staging`, `production`",
        );
        assert_error(
            &with(
                "    trigger: { after: build }",
                "    trigger: { after: build }\n    environment: { slot: { app: web, name: blue } }",
            ),
            11,
            44,
            "stages[0].environment.slot.name",
            "has no slot `blue`",
        );
        assert_error(
            &with("from: staging, to: production", "from: staging, to: prod"),
            14,
            59,
            "stages[1].tasks[0].swap_slots.to",
            "has no slot `prod`",
        );
        assert_error(
            &with(
                "from: staging, to: production",
                "from: staging, to: staging",
            ),
            14,
            59,
            "stages[1].tasks[0].swap_slots.to",
            "with itself",
        );
        // No apps at all.
        let no_apps = with(
            "apps:\n  - name: web\n    start: ./run.sh\n    slots: [staging, production]\n",
            "",
        );
        assert_error(
            &no_apps,
            7,
            36,
            "stages[0].tasks[0].deploy_slot.app",
            "no apps are declared",
        );
    }

    #[test]
    fn unknown_task_kind() {
        assert_error(
            &with(
                "tasks: [ { swap_slots: { app: web, from: staging, to: production } } ]",
                "tasks: [ { foo: 1 } ]",
            ),
            14,
            16,
            "stages[1].tasks[0].foo",
            "unknown task kind `foo`; expected one of shell, http, deploy_slot, swap_slots, task",
        );
        assert_error(
            &with("tasks: [ { swap", "tasks: [ { name: x }, { swap"),
            14,
            14,
            "stages[1].tasks[0]",
            "missing task kind",
        );
        assert_error(
            &with("tasks: [ { swap", "tasks: [ { shell: a, http: b }, { swap"),
            14,
            26,
            "stages[1].tasks[0].http",
            "exactly one kind",
        );
        assert_error(
            &with("tasks: [ { swap", "tasks: [ { shell: a, with: b }, { swap"),
            14,
            26,
            "stages[1].tasks[0].with",
            "unknown field `with`",
        );
        assert_error(
            &with("tasks: [ { swap", "tasks: [ shell, { swap"),
            14,
            14,
            "stages[1].tasks[0]",
            "expected a task mapping",
        );
        assert_error(
            &with("tasks: [ { swap", "tasks: [ { task: Foo }, { swap"),
            14,
            22,
            "stages[1].tasks[0].task",
            "invalid task name `Foo`",
        );
    }

    #[test]
    fn bad_approver() {
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: manual\n    approvals: { before: { approvers: [\"group:\"] } }",
            ),
            14,
            40,
            "stages[1].approvals.before.approvers[0]",
            "invalid approver `group:`",
        );
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: manual\n    approvals: { before: { approvers: [alice, \"team:x\"] } }",
            ),
            14,
            47,
            "stages[1].approvals.before.approvers[1]",
            "invalid approver `team:x`",
        );
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: manual\n    approvals: { before: { approvers: [] } }",
            ),
            14,
            39,
            "stages[1].approvals.before.approvers",
            "at least one approver",
        );
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: manual\n    approvals: { before: { approvers: [a], policy: most } }",
            ),
            14,
            52,
            "stages[1].approvals.before.policy",
            "unknown approval policy `most`",
        );
    }

    #[test]
    fn empty_stages() {
        let yaml = format!("{}stages: []\n", &BASE[..BASE.find("stages:").unwrap()]);
        assert_error(&yaml, 8, 9, "stages", "at least one stage");
    }

    #[test]
    fn bad_version_template() {
        assert_error(
            &with("\"1.0.{build}\"", "\"1.0.{bild}\""),
            3,
            10,
            "version",
            "unknown placeholder `{bild}`",
        );
        assert_error(
            &with("\"1.0.{build}\"", "\"1.0.{build\""),
            3,
            10,
            "version",
            "unbalanced",
        );
        assert_error(
            &with("\"1.0.{build}\"", "\"1.0\""),
            3,
            10,
            "version",
            "at least one of",
        );
    }

    #[test]
    fn bad_threshold() {
        assert_error(
            &with(
                "    trigger: manual",
                "    trigger: manual\n    gates: { before: { checks: [ { prometheus: { server: \"http://p:9090\", query: up, threshold: about 5 } } ] } }",
            ),
            14,
            97,
            "stages[1].gates.before.checks[0].prometheus.threshold",
            "invalid threshold `about 5`",
        );
    }

    #[test]
    fn several_errors_are_reported_in_file_order() {
        let yaml =
            with("  - name: dev", "  - name: Dev").replace("pipeline: shop", "pipeline: Shop");
        let all = errors(&yaml);
        let places: Vec<(usize, &str)> = all.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(places, [(1, "pipeline"), (9, "stages[0].name")]);
        let text = DefinitionErrors(all).to_string();
        assert_eq!(text.lines().count(), 2);
        assert!(
            text.starts_with("shop.yaml:1:11: pipeline: invalid pipeline name `Shop`"),
            "{text}"
        );
    }

    #[test]
    fn validate_checks_edited_definitions() {
        let mut def = parse_definition(BASE, "shop.yaml").unwrap();
        assert_eq!(def.validate(), Ok(()));
        def.stages[1].queue.parallel = 0;
        def.stages.swap(0, 1);
        def.stages[1].trigger = Trigger::After {
            upstream: Upstream::Stage(def.stages[0].name.clone()),
            branches: Default::default(),
        };
        def.stages[0].trigger = Trigger::After {
            upstream: Upstream::Stage(def.stages[1].name.clone()),
            branches: Default::default(),
        };
        let fields: Vec<String> = def
            .validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            ["stages[0].trigger.after", "stages[0].queue.parallel"]
        );
    }

    #[test]
    fn display_format() {
        let e = DefinitionError {
            file: "p.yaml".into(),
            line: 3,
            column: 7,
            field: "stages[1].trigger.schedule.cron".into(),
            message: "bad".into(),
        };
        assert_eq!(
            e.to_string(),
            "p.yaml:3:7: stages[1].trigger.schedule.cron: bad"
        );
    }

    #[test]
    fn json_errors_name_the_field() {
        let err = serde_json::from_str::<PipelineDefinition>(r#"{"pipeline": "x", "source": {"repo": "."}, "version": "{build}", "stages": [{"name": "a", "trigger": "often"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stages[0].trigger: unknown trigger `often`"),
            "{err}"
        );
    }
}
