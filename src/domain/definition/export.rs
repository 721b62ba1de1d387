//! The canonical external form of a definition: fixed key order (the order
//! of the SPEC §3 example), defaults left out, compact forms (`trigger:
//! manual`, `{ after: build }`, `group:qa`), canonical durations.
//!
//! Built as an ordered [`yaml_serde::Value`] tree, which is also what every
//! definition type's `Serialize` writes (so JSON uses the same shape).

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use yaml_serde::{Mapping, Value};

use super::{
    App, ApprovalMode, ApprovalOrder, ApprovalPolicy, Approvals, BranchFilter, Build, CheckKind,
    Environment, GateCheck, GatePolicy, Gates, InconclusivePolicy, Notification, NotificationEvent,
    NotificationFormat, PipelineDefinition, QueueMode, QueuePolicy, Setting, Source, Stage,
    TaskKind, TaskSpec, Trigger, Upstream, defaults,
};

/// An ordered mapping under construction.
struct Map(Mapping);

impl Map {
    fn new() -> Self {
        Map(Mapping::new())
    }

    fn put(&mut self, key: &str, value: Value) -> &mut Self {
        self.0.insert(Value::String(key.to_owned()), value);
        self
    }

    fn put_if(&mut self, condition: bool, key: &str, value: impl FnOnce() -> Value) -> &mut Self {
        if condition {
            self.put(key, value());
        }
        self
    }

    /// `key: [items…]` (each by `f`), left out when there are none.
    fn put_list<T>(&mut self, key: &str, items: &[T], f: impl Fn(&T) -> Value) -> &mut Self {
        self.put_if(!items.is_empty(), key, || list(items, f))
    }

    /// `key: {name: text…}`, left out when the map is empty.
    fn put_strings(&mut self, key: &str, map: &BTreeMap<String, String>) -> &mut Self {
        self.put_if(!map.is_empty(), key, || string_map(map))
    }

    fn done(&mut self) -> Value {
        Value::Mapping(std::mem::take(&mut self.0))
    }
}

fn s(text: impl ToString) -> Value {
    Value::String(text.to_string())
}

fn text<T: ToString>(value: &T) -> Value {
    Value::String(value.to_string())
}

fn n(number: u64) -> Value {
    Value::Number(number.into())
}

fn list<T>(items: &[T], f: impl Fn(&T) -> Value) -> Value {
    Value::Sequence(items.iter().map(f).collect())
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    let mut out = Map::new();
    for (k, v) in map {
        out.put(k, s(v));
    }
    out.done()
}

fn json(value: &serde_json::Value) -> Value {
    yaml_serde::to_value(value).unwrap_or(Value::Null)
}

fn is_empty_object(value: &serde_json::Value) -> bool {
    value.as_object().is_some_and(serde_json::Map::is_empty)
}

/// The whole definition.
pub(crate) fn definition(def: &PipelineDefinition) -> Value {
    Map::new()
        .put("pipeline", s(&def.pipeline))
        .put_if(def.description.is_some(), "description", || {
            s(def.description.as_deref().unwrap_or_default())
        })
        .put("source", source(&def.source))
        .put("version", s(&def.version))
        .put_strings("variables", &def.variables)
        .put_list("apps", &def.apps, app)
        .put_if(
            !def.build.tasks.is_empty() || !def.build.artifacts.is_empty(),
            "build",
            || build(&def.build),
        )
        .put("stages", list(&def.stages, stage))
        .put_list("notifications", &def.notifications, notification)
        .done()
}

pub(crate) fn notification(notification: &Notification) -> Value {
    let mut events = notification.events.clone();
    events.sort();
    events.dedup();
    Map::new()
        .put("name", s(&notification.name))
        .put("url", s(&notification.url))
        .put_if(
            notification.format != NotificationFormat::Generic,
            "format",
            || s(notification.format.as_str()),
        )
        .put_if(notification.secret.is_some(), "secret", || {
            notification.secret.as_ref().map(s).unwrap_or(Value::Null)
        })
        .put_if(events != NotificationEvent::ALL, "events", || {
            list(&events, |e| s(e.as_str()))
        })
        .done()
}

pub(crate) fn source(source: &Source) -> Value {
    Map::new()
        .put("repo", s(&source.repo))
        .put_if(source.branch != defaults::BRANCH, "branch", || {
            s(&source.branch)
        })
        .put_if(!source.branches.is_empty(), "branches", || {
            branch_filter(&source.branches)
        })
        .put_if(source.secrets_for.is_some(), "secrets_for", || {
            list(source.secrets_for.as_deref().unwrap_or_default(), text)
        })
        .put_if(source.webhook_secret.is_some(), "webhook_secret", || {
            source.webhook_secret.as_ref().map(s).unwrap_or(Value::Null)
        })
        .put_if(source.poll.is_some(), "poll", || {
            source.poll.map(s).unwrap_or(Value::Null)
        })
        .done()
}

pub(crate) fn branch_filter(filter: &BranchFilter) -> Value {
    Map::new()
        .put_list("include", &filter.include, text)
        .put_list("exclude", &filter.exclude, text)
        .done()
}

pub(crate) fn app(app: &App) -> Value {
    Map::new()
        .put("name", s(&app.name))
        .put("start", s(&app.start))
        .put_if(app.health != defaults::HEALTH, "health", || s(&app.health))
        .put("slots", list(&app.slots, text))
        .put_if(!app.settings.is_empty(), "settings", || {
            let mut out = Map::new();
            for (k, v) in &app.settings {
                out.put(k, setting(v));
            }
            out.done()
        })
        .done()
}

pub(crate) fn setting(setting: &Setting) -> Value {
    if setting.sticky {
        Map::new()
            .put("value", s(&setting.value))
            .put("sticky", Value::Bool(true))
            .done()
    } else {
        s(&setting.value)
    }
}

pub(crate) fn build(build: &Build) -> Value {
    Map::new()
        .put_list("tasks", &build.tasks, task)
        .put_list("artifacts", &build.artifacts, text)
        .done()
}

pub(crate) fn stage(stage: &Stage) -> Value {
    Map::new()
        .put("name", s(&stage.name))
        .put("trigger", trigger(&stage.trigger))
        .put_if(stage.catch_up, "catch_up", || Value::Bool(true))
        .put_if(stage.environment.is_some(), "environment", || {
            stage
                .environment
                .as_ref()
                .map(environment)
                .unwrap_or(Value::Null)
        })
        .put_strings("variables", &stage.variables)
        .put_list("deployers", &stage.deployers, text)
        .put_if(stage.approvals != Approvals::default(), "approvals", || {
            approvals(&stage.approvals)
        })
        .put_if(stage.gates != Gates::default(), "gates", || {
            gates(&stage.gates)
        })
        .put_list("tasks", &stage.tasks, task)
        .put_if(stage.queue != QueuePolicy::default(), "queue", || {
            queue(&stage.queue)
        })
        .done()
}

pub(crate) fn trigger(trigger: &Trigger) -> Value {
    match trigger {
        Trigger::Manual => s("manual"),
        Trigger::After { upstream, branches } => Map::new()
            .put("after", s(upstream_name(upstream)))
            .put_if(!branches.is_empty(), "branches", || branch_filter(branches))
            .done(),
        Trigger::Schedule(schedule) => Map::new()
            .put(
                "schedule",
                Map::new()
                    .put("cron", s(&schedule.cron))
                    .put("timezone", s(schedule.timezone.name()))
                    .done(),
            )
            .done(),
    }
}

fn upstream_name(upstream: &Upstream) -> &str {
    match upstream {
        Upstream::Build => "build",
        Upstream::Stage(name) => name.as_str(),
    }
}

pub(crate) fn environment(environment: &Environment) -> Value {
    match environment {
        Environment::Host => s("host"),
        Environment::Agent { name } => Map::new().put("agent", s(name)).done(),
        Environment::Slot { app, name } => Map::new()
            .put(
                "slot",
                Map::new().put("app", s(app)).put("name", s(name)).done(),
            )
            .done(),
    }
}

pub(crate) fn approvals(approvals: &Approvals) -> Value {
    Map::new()
        .put_if(approvals.before.is_some(), "before", || {
            approvals
                .before
                .as_ref()
                .map(approval_policy)
                .unwrap_or(Value::Null)
        })
        .put_if(approvals.after.is_some(), "after", || {
            approvals
                .after
                .as_ref()
                .map(approval_policy)
                .unwrap_or(Value::Null)
        })
        .put_if(
            approvals.order == ApprovalOrder::AfterGates,
            "order",
            || s(approvals.order.as_str()),
        )
        .done()
}

pub(crate) fn approval_policy(policy: &ApprovalPolicy) -> Value {
    Map::new()
        .put("approvers", list(&policy.approvers, text))
        .put_if(policy.policy != ApprovalMode::Any, "policy", || {
            approval_mode(&policy.policy)
        })
        .put_if(
            policy.timeout != defaults::APPROVAL_TIMEOUT,
            "timeout",
            || s(policy.timeout),
        )
        .put_if(policy.fresh_sign_in.is_some(), "fresh_sign_in", || {
            policy.fresh_sign_in.map(s).unwrap_or(Value::Null)
        })
        .put_if(
            policy.requester_can_approve,
            "requester_can_approve",
            || Value::Bool(true),
        )
        .put_if(policy.exclude_authors, "exclude_authors", || {
            Value::Bool(true)
        })
        .done()
}

pub(crate) fn approval_mode(mode: &ApprovalMode) -> Value {
    match mode {
        ApprovalMode::Any => s("any"),
        ApprovalMode::All => s("all"),
        ApprovalMode::AtLeast(count) => Map::new().put("n", n(u64::from(*count))).done(),
    }
}

pub(crate) fn gates(gates: &Gates) -> Value {
    Map::new()
        .put_if(gates.before.is_some(), "before", || {
            gates
                .before
                .as_ref()
                .map(gate_policy)
                .unwrap_or(Value::Null)
        })
        .put_if(gates.after.is_some(), "after", || {
            gates.after.as_ref().map(gate_policy).unwrap_or(Value::Null)
        })
        .done()
}

pub(crate) fn gate_policy(gate: &GatePolicy) -> Value {
    Map::new()
        .put_if(
            gate.delay != defaults::GATE_DELAY,
            "delay",
            || s(gate.delay),
        )
        .put_if(gate.interval != defaults::GATE_INTERVAL, "interval", || {
            s(gate.interval)
        })
        .put_if(gate.timeout != defaults::GATE_TIMEOUT, "timeout", || {
            s(gate.timeout)
        })
        .put_if(gate.steady != defaults::GATE_STEADY, "steady", || {
            s(gate.steady)
        })
        .put("checks", list(&gate.checks, check))
        .done()
}

pub(crate) fn check(check: &GateCheck) -> Value {
    let mut out = Map::new();
    match &check.kind {
        CheckKind::Http {
            method,
            url,
            headers,
            body,
            timeout,
            success,
        } => {
            out.put(
                "http",
                Map::new()
                    .put("url", s(url))
                    .put_if(method != defaults::HTTP_METHOD, "method", || s(method))
                    .put_strings("headers", headers)
                    .put_if(body.is_some(), "body", || {
                        s(body.as_deref().unwrap_or_default())
                    })
                    .put_if(*timeout != defaults::HTTP_CHECK_TIMEOUT, "timeout", || {
                        s(timeout)
                    })
                    .put_if(success != defaults::HTTP_SUCCESS, "success", || s(success))
                    .done(),
            );
        }
        CheckKind::Prometheus {
            server,
            query,
            threshold,
        } => {
            out.put(
                "prometheus",
                Map::new()
                    .put("server", s(server))
                    .put("query", s(query))
                    .put("threshold", s(threshold))
                    .done(),
            );
        }
        CheckKind::Command { run } => {
            out.put("command", s(run));
        }
        CheckKind::Extension { name, with } => {
            out.put("check", s(name));
            out.put_if(!is_empty_object(with), "with", || json(with));
        }
    }
    out.put_if(check.name.is_some(), "name", || {
        s(check.name.as_deref().unwrap_or_default())
    })
    .put_if(
        check.consecutive_successes != 1,
        "consecutive_successes",
        || n(u64::from(check.consecutive_successes)),
    )
    .put_if(
        check.on_inconclusive == InconclusivePolicy::Ask,
        "on_inconclusive",
        || s(check.on_inconclusive.as_str()),
    )
    .done()
}

pub(crate) fn task(task: &TaskSpec) -> Value {
    let mut out = Map::new();
    match &task.kind {
        TaskKind::Shell { script } => {
            out.put("shell", s(script));
        }
        TaskKind::Http {
            method,
            url,
            expect_status,
        } => {
            out.put(
                "http",
                Map::new()
                    .put("url", s(url))
                    .put_if(method != defaults::HTTP_METHOD, "method", || s(method))
                    .put_if(*expect_status != defaults::HTTP_EXPECT, "expect", || {
                        n(u64::from(*expect_status))
                    })
                    .done(),
            );
        }
        TaskKind::DeploySlot { app, slot } => {
            out.put(
                "deploy_slot",
                Map::new().put("app", s(app)).put("slot", s(slot)).done(),
            );
        }
        TaskKind::SwapSlots { app, from, to } => {
            out.put(
                "swap_slots",
                Map::new()
                    .put("app", s(app))
                    .put("from", s(from))
                    .put("to", s(to))
                    .done(),
            );
        }
        TaskKind::Extension { name, with } => {
            out.put("task", s(name));
            out.put_if(!is_empty_object(with), "with", || json(with));
        }
    }
    out.put_if(task.name.is_some(), "name", || {
        s(task.name.as_deref().unwrap_or_default())
    })
    .put_strings("env", &task.env)
    .put_if(task.timeout.is_some(), "timeout", || {
        task.timeout.map(s).unwrap_or(Value::Null)
    })
    .done()
}

pub(crate) fn queue(queue: &QueuePolicy) -> Value {
    Map::new()
        .put_if(
            queue.parallel != defaults::QUEUE_PARALLEL,
            "parallel",
            || n(u64::from(queue.parallel)),
        )
        .put_if(queue.policy == QueueMode::Sequence, "policy", || {
            s(queue.policy.as_str())
        })
        .done()
}

/// Implements `Serialize` through the canonical value of a type.
macro_rules! serialize_as_value {
    ($($ty:ty => $f:ident),* $(,)?) => {
        $(
            impl Serialize for $ty {
                fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                    $f(self).serialize(serializer)
                }
            }
        )*
    };
}

serialize_as_value!(
    PipelineDefinition => definition,
    Source => source,
    BranchFilter => branch_filter,
    App => app,
    Setting => setting,
    Build => build,
    Stage => stage,
    Trigger => trigger,
    Environment => environment,
    Approvals => approvals,
    ApprovalPolicy => approval_policy,
    ApprovalMode => approval_mode,
    Gates => gates,
    GatePolicy => gate_policy,
    GateCheck => check,
    TaskSpec => task,
    QueuePolicy => queue,
    Notification => notification,
);
