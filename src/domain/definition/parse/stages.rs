//! `stages:`: each stage's name, trigger (after which upstream, on which
//! schedule), environment, the app slots it names, and its queue.

// The reader's helpers, node types and the definition types, from `parse`.
use super::*;

impl Reader<'_> {
    pub(super) fn stages(&mut self, v: &V<'_>, apps: &AppTable) -> Option<Vec<Stage>> {
        let items = self.list(v, "stages")?;
        if items.is_empty() {
            self.at(v, "a pipeline needs at least one stage");
            return None;
        }
        let mut earlier: Earlier = Vec::new();
        self.each(items, |r, item| r.stage(item, apps, &mut earlier))
    }

    pub(super) fn stage(
        &mut self,
        v: &V<'_>,
        apps: &AppTable,
        earlier: &mut Earlier,
    ) -> Option<Stage> {
        let m = self.map(v, "a stage mapping with at least `name`", STAGE_KEYS)?;
        let name_v = self.required(&m, "name");
        let mut name = name_v
            .as_ref()
            .and_then(|v| self.parsed(v, "a stage name", StageName::from_str));
        if let (Some(n), Some(name_v)) = (&name, &name_v) {
            if n.as_str() == "build" {
                self.at(
                    name_v,
                    "`build` is reserved for the build; choose another stage name",
                );
                name = None;
            } else if let Some((_, _, line)) =
                earlier.iter().find(|(_, e, _)| e.as_ref() == Some(n))
            {
                let line = *line;
                self.at(
                    name_v,
                    format!("duplicate stage name `{n}` (first declared on line {line})"),
                );
                name = None;
            }
        }
        let trigger = match m.get("trigger") {
            Some(t) => self.trigger(&t, name.as_ref(), earlier),
            None => Some(Trigger::Manual),
        };
        if let Some(name_v) = &name_v
            && let Value::Scalar { text, .. } = &name_v.node.value
        {
            earlier.push((text.clone(), name.clone(), name_v.node.mark.line));
        }
        let environment = match m.get("environment") {
            Some(e) => self.environment(&e, apps).map(Some),
            None => Some(None),
        };
        let variables = m
            .get("variables")
            .map(|v| self.env_map(&v, "variables"))
            .unwrap_or_default();
        let approvals = match m.get("approvals") {
            Some(a) => self.approvals(&a),
            None => Some(Approvals::default()),
        };
        let gates = match m.get("gates") {
            Some(g) => self.gates(&g),
            None => Some(Gates::default()),
        };
        let tasks = match m.get("tasks") {
            Some(t) => self.tasks(&t, apps),
            None => Some(Vec::new()),
        };
        let queue = match m.get("queue") {
            Some(q) => self.queue(&q),
            None => Some(QueuePolicy::default()),
        };
        let catch_up = self.opt_bool(&m, "catch_up");
        let deployers = match m.get("deployers") {
            Some(d) => self.approvers(&d, "deployers", false),
            None => Some(Vec::new()),
        };
        Some(Stage {
            name: name?,
            trigger: trigger?,
            environment: environment?,
            variables,
            approvals: approvals?,
            gates: gates?,
            tasks: tasks?,
            queue: queue?,
            catch_up,
            deployers: deployers?,
        })
    }

    pub(super) fn trigger(
        &mut self,
        v: &V<'_>,
        stage: Option<&StageName>,
        earlier: &Earlier,
    ) -> Option<Trigger> {
        const EXPECTED: &str = "expected `manual`, `{ after: build }`, `{ after: STAGE }` or `{ schedule: { cron: \"0 0 3 * * *\", timezone: \"UTC\" } }`";
        match &v.node.value {
            Value::Scalar { text, .. } if text == "manual" => Some(Trigger::Manual),
            Value::Scalar { text, .. } => {
                self.at(v, format!("unknown trigger `{text}`; {EXPECTED}"));
                None
            }
            Value::Seq(_) => {
                self.at(v, format!("expected a trigger, found a list; {EXPECTED}"));
                None
            }
            Value::Map(entries) => {
                if entries.is_empty() {
                    self.at(v, format!("empty trigger; {EXPECTED}"));
                    return None;
                }
                let has_after = entries.iter().any(|(k, _)| key_text(k) == "after");
                let has_schedule = entries.iter().any(|(k, _)| key_text(k) == "schedule");
                if has_after && has_schedule {
                    if let Some((k, _)) = entries.iter().find(|(k, _)| key_text(k) == "schedule") {
                        self.error(
                            k.mark,
                            &join_path(&v.path, "schedule"),
                            "a trigger is either `after` or `schedule`, not both",
                        );
                    }
                    return None;
                }
                if has_schedule {
                    let m = self.map(v, "a trigger", &["schedule"])?;
                    let s = self.required(&m, "schedule")?;
                    return self.schedule(&s).map(Trigger::Schedule);
                }
                if has_after {
                    let m = self.map(v, "a trigger", &["after", "branches"])?;
                    let branches = m
                        .get("branches")
                        .map(|b| self.branch_filter(&b))
                        .unwrap_or_default();
                    let after = self.required(&m, "after")?;
                    let upstream = self.upstream(&after, stage, earlier)?;
                    return Some(Trigger::After { upstream, branches });
                }
                let Some((first_key, _)) = entries.iter().find(|(k, _)| key_text(k) != "branches")
                else {
                    self.at(v, "`branches` filters an `after` trigger; add `after: build` or `after: STAGE`");
                    return None;
                };
                let name = key_text(first_key);
                let hint = suggestion(name, &["after", "schedule", "manual"]);
                self.error(
                    first_key.mark,
                    &join_path(&v.path, name),
                    format!("unknown trigger `{name}`{hint}; {EXPECTED}"),
                );
                None
            }
        }
    }

    pub(super) fn upstream(
        &mut self,
        v: &V<'_>,
        stage: Option<&StageName>,
        earlier: &Earlier,
    ) -> Option<Upstream> {
        let text = self.non_empty(v, "`build` or the name of an earlier stage")?;
        if text == "build" {
            return Some(Upstream::Build);
        }
        if let Some((_, parsed, _)) = earlier.iter().find(|(raw, _, _)| *raw == text) {
            // An earlier stage whose own name is invalid was reported already.
            return parsed.clone().map(Upstream::Stage);
        }
        let names: Vec<&str> = earlier
            .iter()
            .filter_map(|(_, parsed, _)| parsed.as_ref().map(StageName::as_str))
            .collect();
        let candidates = if earlier.is_empty() {
            "`build` (this is the first stage)".to_owned()
        } else {
            format!("`build` or an earlier stage: {}", quoted_list(&names))
        };
        let message = if stage.is_some_and(|s| s.as_str() == text) {
            format!("a stage cannot be triggered after itself; expected {candidates}")
        } else {
            format!("`{text}` is not a stage that comes before this one; expected {candidates}")
        };
        self.at(v, message);
        None
    }

    pub(super) fn schedule(&mut self, v: &V<'_>) -> Option<Schedule> {
        let m = self.map(
            v,
            "a schedule `{ cron: \"0 0 3 * * *\", timezone: \"UTC\" }`",
            SCHEDULE_KEYS,
        )?;
        let cron = self
            .required(&m, "cron")
            .and_then(|c| self.parsed(&c, "a six-field cron expression", Cron::parse));
        let timezone = match m.get("timezone") {
            Some(t) => {
                let text = self.non_empty(&t, "an IANA time zone such as `Europe/Berlin`");
                text.and_then(|name| match parse_timezone(&name) {
                    Ok(tz) => Some(tz),
                    Err(e) => {
                        let hint = suggest_timezone(&name)
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_default();
                        self.at(&t, format!("{e}{hint}"));
                        None
                    }
                })
            }
            None => Some(chrono_tz::UTC),
        };
        Some(Schedule {
            cron: cron?,
            timezone: timezone?,
        })
    }

    pub(super) fn environment(&mut self, v: &V<'_>, apps: &AppTable) -> Option<Environment> {
        const EXPECTED: &str =
            "expected `host`, `{ agent: NAME }` or `{ slot: { app: APP, name: SLOT } }`";
        match &v.node.value {
            Value::Scalar { text, .. } if text == "host" => Some(Environment::Host),
            Value::Scalar { text, .. } => {
                self.at(v, format!("unknown environment `{text}`; {EXPECTED}"));
                None
            }
            Value::Seq(_) => {
                self.at(
                    v,
                    format!("expected an environment, found a list; {EXPECTED}"),
                );
                None
            }
            Value::Map(entries) => {
                let kinds = ["host", "agent", "slot"];
                let Some((first_key, _)) = entries.first() else {
                    self.at(v, format!("empty environment; {EXPECTED}"));
                    return None;
                };
                let kind = key_text(first_key);
                if !kinds.contains(&kind) {
                    let hint = suggestion(kind, &kinds);
                    self.error(
                        first_key.mark,
                        &join_path(&v.path, kind),
                        format!("unknown environment `{kind}`{hint}; {EXPECTED}"),
                    );
                    return None;
                }
                let m = self.map(v, "an environment", &[kind])?;
                match kind {
                    "host" => {
                        let h = self.required(&m, "host")?;
                        self.boolean(&h)?.then_some(Environment::Host).or_else(|| {
                            self.at(&h, EXPECTED);
                            None
                        })
                    }
                    "agent" => {
                        let a = self.required(&m, "agent")?;
                        let name = self.non_empty(&a, "an agent name")?;
                        if name.chars().any(char::is_whitespace) {
                            self.at(
                                &a,
                                format!("invalid agent name `{name}`: it must not contain spaces"),
                            );
                            return None;
                        }
                        Some(Environment::Agent { name })
                    }
                    _ => {
                        let s = self.required(&m, "slot")?;
                        let sm =
                            self.map(&s, "a slot `{ app: APP, name: SLOT }`", SLOT_REF_KEYS)?;
                        let app_v = self.required(&sm, "app");
                        let slot_v = self.required(&sm, "name");
                        let (app, name) = self.app_slot(apps, app_v.as_ref(), slot_v.as_ref())?;
                        Some(Environment::Slot { app, name })
                    }
                }
            }
        }
    }

    /// Checks that `app` is declared and `slot` is one of its slots.
    pub(super) fn app_slot(
        &mut self,
        apps: &AppTable,
        app_v: Option<&V<'_>>,
        slot_v: Option<&V<'_>>,
    ) -> Option<(AppName, SlotName)> {
        let app = app_v.and_then(|v| self.parsed(v, "an app name", AppName::from_str));
        let slot = slot_v.and_then(|v| self.parsed(v, "a slot name", SlotName::from_str));
        let (app, slot, app_v, slot_v) = (app?, slot?, app_v?, slot_v?);
        let Some((_, slots)) = apps.iter().find(|(name, _)| *name == app) else {
            if self.unchecked_apps {
                return None;
            }
            let message = if apps.is_empty() {
                format!("unknown app `{app}`: no apps are declared under `apps`")
            } else {
                let names: Vec<&str> = apps.iter().map(|(n, _)| n.as_str()).collect();
                format!(
                    "unknown app `{app}`; declared apps: {}",
                    quoted_list(&names)
                )
            };
            self.at(app_v, message);
            return None;
        };
        let Some(slots) = slots else {
            // The app's slots are already reported as invalid.
            return None;
        };
        if !slots.contains(&slot) {
            let names: Vec<&str> = slots.iter().map(SlotName::as_str).collect();
            self.at(
                slot_v,
                format!(
                    "app `{app}` has no slot `{slot}`; its slots: {}",
                    quoted_list(&names)
                ),
            );
            return None;
        }
        Some((app, slot))
    }

    pub(super) fn queue(&mut self, v: &V<'_>) -> Option<QueuePolicy> {
        let m = self.map(
            v,
            "a queue `{ parallel: 1, policy: latest_only }`",
            QUEUE_KEYS,
        )?;
        let parallel = match m.get("parallel") {
            Some(p) => self.whole(&p, fields::QUEUE_PARALLEL),
            None => Some(defaults::QUEUE_PARALLEL),
        };
        let policy = match m.get("policy") {
            Some(p) => self.choice(&p, "queue policy", QueueMode::WORDS),
            None => Some(QueueMode::LatestOnly),
        };
        Some(QueuePolicy {
            parallel: parallel?,
            policy: policy?,
        })
    }
}
