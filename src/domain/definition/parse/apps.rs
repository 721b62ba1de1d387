//! `apps:` (their slots and settings) and `build:` of a definition.

// The reader's helpers, node types and the definition types, from `parse`.
use super::*;

impl Reader<'_> {
    pub(super) fn apps(&mut self, v: &V<'_>) -> (Vec<App>, AppTable) {
        if !matches!(v.node.value, Value::Seq(_)) {
            self.unchecked_apps = true;
        }
        let mut apps: Vec<App> = Vec::new();
        let mut table: AppTable = Vec::new();
        let mut seen: Vec<(AppName, usize)> = Vec::new();
        for item in self.list(v, "apps").unwrap_or_default() {
            let Some(m) = self.map(
                &item,
                "an app mapping with `name`, `start` and `slots`",
                APP_KEYS,
            ) else {
                continue;
            };
            let name_v = self.required(&m, "name");
            let name = name_v
                .as_ref()
                .and_then(|v| self.parsed(v, "an app name", AppName::from_str));
            if let (Some(name), Some(name_v)) = (&name, &name_v) {
                if let Some((_, line)) = seen.iter().find(|(n, _)| n == name) {
                    let line = *line;
                    self.at(
                        name_v,
                        format!("duplicate app name `{name}` (first declared on line {line})"),
                    );
                } else {
                    seen.push((name.clone(), name_v.node.mark.line));
                }
            }
            let start = self
                .required(&m, "start")
                .and_then(|v| self.non_empty(&v, "a start command"));
            let health = match m.get("health") {
                Some(v) => self
                    .non_empty(&v, "a health-check path such as `/health`")
                    .and_then(|h| {
                        if h.starts_with('/') {
                            Some(h)
                        } else {
                            self.at(
                                &v,
                                format!("the health check `{h}` must be a path starting with `/`"),
                            );
                            None
                        }
                    }),
                None => Some(defaults::HEALTH.to_owned()),
            };
            let slots = self.required(&m, "slots").and_then(|v| self.slots(&v));
            if let Some(name) = &name
                && !table.iter().any(|(n, _)| n == name)
            {
                table.push((name.clone(), slots.clone()));
            }
            let settings = m
                .get("settings")
                .map(|v| self.settings(&v))
                .unwrap_or_default();
            if let (Some(name), Some(start), Some(health), Some(slots)) =
                (name, start, health, slots)
            {
                apps.push(App {
                    name,
                    start,
                    health,
                    slots,
                    settings,
                });
            }
        }
        (apps, table)
    }

    pub(super) fn slots(&mut self, v: &V<'_>) -> Option<Vec<SlotName>> {
        let items = self.list(v, "slot names")?;
        if items.is_empty() {
            self.at(v, "an app needs at least one slot");
            return None;
        }
        let mut slots: Vec<SlotName> = Vec::new();
        let mut ok = true;
        for item in items {
            match self.parsed(&item, "a slot name", SlotName::from_str) {
                Some(slot) if slots.contains(&slot) => {
                    self.at(&item, format!("duplicate slot name `{slot}`"));
                    ok = false;
                }
                Some(slot) => slots.push(slot),
                None => ok = false,
            }
        }
        ok.then_some(slots)
    }

    pub(super) fn settings(&mut self, v: &V<'_>) -> BTreeMap<String, Setting> {
        self.named_map(
            v,
            "settings",
            is_env_name,
            |name| format!("invalid setting name `{name}`: use letters, digits and `_`, not starting with a digit"),
            |r, value| r.setting(value),
        )
    }

    /// One setting: a text, or `{ value, sticky }`.
    fn setting(&mut self, value: &V<'_>) -> Option<Setting> {
        match &value.node.value {
            Value::Map(_) => self
                .map(
                    value,
                    "a setting `{ value: ..., sticky: true }`",
                    SETTING_KEYS,
                )
                .and_then(|m| {
                    let text = match m.get("value") {
                        Some(v) => self.text(&v, "a text value"),
                        None if m.has("value") => Some(String::new()),
                        None => self.required(&m, "value").and(None),
                    };
                    let sticky = self.opt_bool(&m, "sticky");
                    text.map(|value| Setting { value, sticky })
                }),
            Value::Scalar {
                kind: ScalarKind::Null,
                ..
            } => Some(Setting {
                value: String::new(),
                sticky: false,
            }),
            _ => self
                .text(value, "a text value or `{ value, sticky }`")
                .map(|value| Setting {
                    value,
                    sticky: false,
                }),
        }
    }

    pub(super) fn build(&mut self, v: &V<'_>, apps: &AppTable) -> Option<Build> {
        let m = self.map(
            v,
            "a build mapping with `tasks` and `artifacts`",
            BUILD_KEYS,
        )?;
        let tasks = m
            .get("tasks")
            .map(|v| self.tasks(&v, apps))
            .unwrap_or(Some(Vec::new()));
        let artifacts = m
            .get("artifacts")
            .map(|v| self.text_list(&v, "artifact globs"))
            .unwrap_or_default();
        Some(Build {
            tasks: tasks?,
            artifacts,
        })
    }
}
