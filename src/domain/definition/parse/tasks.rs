//! The tasks of the build and of a stage, and what tasks and checks share:
//! the one kind key, HTTP methods and URLs, an extension's name and input.

// The reader's helpers, node types and the definition types, from `parse`.
use super::*;

impl Reader<'_> {
    /// Finds the one kind key of a task or check; reports none or several.
    pub(super) fn kind_key<'a>(
        &mut self,
        v: &V<'a>,
        what: &str,
        kinds: &[&str],
        common: &[&str],
    ) -> Option<&'a str> {
        let Value::Map(entries) = &v.node.value else {
            let found = v.node.describe();
            self.at(
                v,
                format!(
                    "expected a {what} mapping such as `{{ {}: ... }}`, found {found}",
                    kinds[0]
                ),
            );
            return None;
        };
        let expected = format!("expected one of {}", kinds.join(", "));
        let mut found: Vec<&Node> = entries
            .iter()
            .map(|(k, _)| k)
            .filter(|k| kinds.contains(&key_text(k)))
            .collect();
        match found.len() {
            0 => {
                match entries
                    .iter()
                    .find(|(k, _)| !common.contains(&key_text(k)) && key_text(k) != "with")
                {
                    Some((k, _)) => {
                        let name = key_text(k);
                        let hint = suggestion(name, kinds);
                        self.error(
                            k.mark,
                            &join_path(&v.path, name),
                            format!("unknown {what} kind `{name}`{hint}; {expected}"),
                        );
                    }
                    None => self.at(v, format!("missing {what} kind; {expected}")),
                }
                None
            }
            1 => found.pop().map(key_text),
            _ => {
                let (first, second) = (key_text(found[0]), key_text(found[1]));
                self.error(
                    found[1].mark,
                    &join_path(&v.path, second),
                    format!(
                        "a {what} has exactly one kind, but both `{first}` and `{second}` are given"
                    ),
                );
                None
            }
        }
    }

    /// The kind of a task or check (`what`) and its mapping, whose keys may
    /// be the common ones, the kind and, for an extension (the kind named
    /// like `what`), its input `with`.
    pub(super) fn kinded<'a>(
        &mut self,
        v: &V<'a>,
        what: &'static str,
        kinds: &[&str],
        common: &[&str],
    ) -> Option<(&'a str, M<'a>)> {
        let kind = self.kind_key(v, what, kinds, common)?;
        let mut allowed: Vec<&str> = common.to_vec();
        allowed.push(kind);
        if kind == what {
            allowed.push("with");
        }
        let m = self.map(v, &format!("a {what}"), &allowed)?;
        Some((kind, m))
    }

    /// An extension's NAME (it runs `slipway-{what}-NAME`) and its input
    /// `with` (`{}` when left out).
    pub(super) fn extension(
        &mut self,
        body: &V<'_>,
        m: &M<'_>,
        what: &'static str,
    ) -> Option<(String, serde_json::Value)> {
        let name = self.parsed(body, "an extension name", |text| extension_name(text, what));
        let with = m
            .get("with")
            .map(|w| self.json(&w))
            .unwrap_or_else(empty_object);
        name.map(|name| (name, with))
    }

    pub(super) fn tasks(&mut self, v: &V<'_>, apps: &AppTable) -> Option<Vec<TaskSpec>> {
        let items = self.list(v, "tasks")?;
        self.each(items, |r, item| r.task(item, apps))
    }

    pub(super) fn task(&mut self, v: &V<'_>, apps: &AppTable) -> Option<TaskSpec> {
        let (kind, m) = self.kinded(v, "task", TASK_KINDS, TASK_COMMON)?;
        let name = m.get("name").and_then(|n| self.text(&n, "a task name"));
        let env = m
            .get("env")
            .map(|e| self.env_map(&e, "environment variables"))
            .unwrap_or_default();
        let timeout = match m.get("timeout") {
            Some(t) => self.duration(&t).map(Some),
            None => Some(None),
        };
        let body = self.required(&m, kind)?;
        let kind = match kind {
            "shell" => self
                .non_empty(&body, "a shell script")
                .map(|script| TaskKind::Shell { script }),
            "http" => self.http_task(&body),
            "deploy_slot" => {
                let dm = self.map(&body, "`{ app: APP, slot: SLOT }`", DEPLOY_SLOT_KEYS)?;
                let app_v = self.required(&dm, "app");
                let slot_v = self.required(&dm, "slot");
                self.app_slot(apps, app_v.as_ref(), slot_v.as_ref())
                    .map(|(app, slot)| TaskKind::DeploySlot { app, slot })
            }
            "swap_slots" => {
                let sm = self.map(
                    &body,
                    "`{ app: APP, from: SLOT, to: SLOT }`",
                    SWAP_SLOTS_KEYS,
                )?;
                let app_v = self.required(&sm, "app");
                let from_v = self.required(&sm, "from");
                let to_v = self.required(&sm, "to");
                let from = self.app_slot(apps, app_v.as_ref(), from_v.as_ref());
                let to = self.app_slot(apps, app_v.as_ref(), to_v.as_ref());
                match (from, to, to_v) {
                    (Some((app, from)), Some((_, to)), Some(to_v)) => {
                        if from == to {
                            self.at(&to_v, format!("cannot swap slot `{from}` with itself"));
                            None
                        } else {
                            Some(TaskKind::SwapSlots { app, from, to })
                        }
                    }
                    _ => None,
                }
            }
            _ => self
                .extension(&body, &m, "task")
                .map(|(name, with)| TaskKind::Extension { name, with }),
        };
        Some(TaskSpec {
            name,
            kind: kind?,
            env,
            timeout: timeout?,
        })
    }

    pub(super) fn http_method(&mut self, m: &M<'_>) -> Option<String> {
        match m.get("method") {
            Some(v) => {
                let text = self.non_empty(&v, "an HTTP method such as GET")?;
                let method = fields::http_method(&text);
                if method.is_none() {
                    self.at(&v, format!("invalid HTTP method `{text}`"));
                }
                method
            }
            None => Some(defaults::HTTP_METHOD.to_owned()),
        }
    }

    pub(super) fn url(&mut self, m: &M<'_>, key: &str) -> Option<String> {
        let v = self.required(m, key)?;
        let url = self.non_empty(&v, "a URL")?;
        if fields::is_http_url(&url) {
            Some(url)
        } else {
            self.at(
                &v,
                format!("invalid URL `{url}`: it must start with http:// or https://"),
            );
            None
        }
    }

    pub(super) fn http_task(&mut self, v: &V<'_>) -> Option<TaskKind> {
        let m = self.map(
            v,
            "`{ url: URL, method: GET, expect: 200 }`",
            HTTP_TASK_KEYS,
        )?;
        let url = self.url(&m, "url");
        let method = self.http_method(&m);
        let expect_status = match m.get("expect") {
            Some(e) => self
                .whole(&e, fields::HTTP_EXPECT)
                .and_then(|n| u16::try_from(n).ok()),
            None => Some(defaults::HTTP_EXPECT),
        };
        Some(TaskKind::Http {
            method: method?,
            url: url?,
            expect_status: expect_status?,
        })
    }
}
