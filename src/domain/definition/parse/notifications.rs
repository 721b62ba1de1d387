//! `notifications:`, outgoing webhooks about approvals.

// The reader's helpers, node types and the definition types, from `parse`.
use super::*;

impl Reader<'_> {
    /// `notifications:`, outgoing webhooks about approvals.
    pub(super) fn notifications(&mut self, v: &V<'_>) -> Option<Vec<Notification>> {
        let items = self.list(v, "notifications")?;
        let mut seen: Vec<(String, usize)> = Vec::new();
        self.each(items, |r, item| r.notification(item, &mut seen))
    }

    pub(super) fn notification(
        &mut self,
        v: &V<'_>,
        seen: &mut Vec<(String, usize)>,
    ) -> Option<Notification> {
        let m = self.map(
            v,
            "a notification mapping with `name` and `url`",
            NOTIFICATION_KEYS,
        )?;
        let name_v = self.required(&m, "name");
        let name = name_v.as_ref().and_then(|v| {
            self.parsed(v, "a notification name", |text| match name_problem(text) {
                None => Ok(text.to_owned()),
                Some(problem) => Err(DomainError::InvalidName {
                    kind: "notification",
                    value: text.to_owned(),
                    reason: format!(
                        "{problem} (allowed: lower-case letters, digits, `-` and `_`, 1 to 63 characters)"
                    ),
                }),
            })
        });
        if let (Some(name), Some(name_v)) = (&name, &name_v) {
            if let Some((_, line)) = seen.iter().find(|(n, _)| n == name) {
                let line = *line;
                self.at(
                    name_v,
                    format!("duplicate notification name `{name}` (first declared on line {line})"),
                );
                return None;
            }
            seen.push((name.clone(), name_v.node.mark.line));
        }
        let url = self.url(&m, "url").and_then(|url| {
            if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                if let Some(v) = m.get("url") {
                    self.at(
                        &v,
                        format!("invalid URL `{url}`: it must not contain spaces"),
                    );
                }
                None
            } else {
                Some(url)
            }
        });
        let format = match m.get("format") {
            Some(f) => self.choice(
                &f,
                "notification format",
                &[
                    ("generic", NotificationFormat::Generic),
                    ("slack", NotificationFormat::Slack),
                ],
            ),
            None => Some(NotificationFormat::Generic),
        };
        let secret = match m.get("secret") {
            Some(s) => self
                .parsed(
                    &s,
                    "a secret reference `${{ secrets.NAME }}`",
                    SecretRef::parse,
                )
                .map(Some),
            None => Some(None),
        };
        let events = match m.get("events") {
            Some(e) => self.notification_events(&e),
            None => Some(NotificationEvent::ALL.to_vec()),
        };
        Some(Notification {
            name: name?,
            url: url?,
            format: format?,
            secret: secret?,
            events: events?,
        })
    }

    pub(super) fn notification_events(&mut self, v: &V<'_>) -> Option<Vec<NotificationEvent>> {
        let items = self.list(v, "events")?;
        if items.is_empty() {
            self.at(
                v,
                "a notification needs at least one event (leave `events` out for all)",
            );
            return None;
        }
        let options: Vec<(&str, NotificationEvent)> = NotificationEvent::ALL
            .iter()
            .map(|e| (e.as_str(), *e))
            .collect();
        let mut events = Vec::new();
        let mut ok = true;
        for item in items {
            match self.choice(&item, "event", &options) {
                Some(e) if events.contains(&e) => {
                    self.at(&item, format!("duplicate event `{}`", e.as_str()));
                    ok = false;
                }
                Some(e) => events.push(e),
                None => ok = false,
            }
        }
        events.sort();
        ok.then_some(events)
    }
}
