//! A stage's approvals and gates, and the checks of a gate.

// The reader's helpers, node types and the definition types, from `parse`.
use super::*;

impl Reader<'_> {
    pub(super) fn approvals(&mut self, v: &V<'_>) -> Option<Approvals> {
        let m = self.map(
            v,
            "approvals `{ before: {...}, after: {...} }`",
            APPROVALS_KEYS,
        )?;
        let before = match m.get("before") {
            Some(b) => self.approval_policy(&b).map(Some),
            None => Some(None),
        };
        let after = match m.get("after") {
            Some(a) => self.approval_policy(&a).map(Some),
            None => Some(None),
        };
        let order = match m.get("order") {
            Some(o) => self.choice(&o, "approval order", ApprovalOrder::WORDS),
            None => Some(ApprovalOrder::default()),
        };
        Some(Approvals {
            before: before?,
            after: after?,
            order: order?,
        })
    }

    pub(super) fn approvers(
        &mut self,
        v: &V<'_>,
        what: &str,
        required: bool,
    ) -> Option<Vec<Approver>> {
        let items = self.list(v, what)?;
        if required && items.is_empty() {
            self.at(
                v,
                "at least one approver is needed (a user name or `group:NAME`)",
            );
            return None;
        }
        self.each(items, |r, item| {
            r.parsed(item, "a user name or `group:NAME`", Approver::parse)
        })
    }

    pub(super) fn approval_policy(&mut self, v: &V<'_>) -> Option<ApprovalPolicy> {
        let m = self.map(v, "an approval policy with `approvers`", APPROVAL_KEYS)?;
        let approvers = self
            .required(&m, "approvers")
            .and_then(|a| self.approvers(&a, "approvers", true));
        let policy = match m.get("policy") {
            Some(p) => self.approval_mode(&p),
            None => Some(ApprovalMode::Any),
        };
        let timeout = match m.get("timeout") {
            Some(t) => self.duration(&t).and_then(|d| {
                if fields::APPROVAL_TIMEOUT.accepts(d) {
                    Some(d)
                } else {
                    self.at(&t, "the approval timeout must be longer than 0s");
                    None
                }
            }),
            None => Some(fields::APPROVAL_TIMEOUT.default),
        };
        let fresh_sign_in = match m.get("fresh_sign_in") {
            Some(f) => self.duration(&f).map(Some),
            None => Some(None),
        };
        let requester_can_approve = self.opt_bool(&m, "requester_can_approve");
        let exclude_authors = self.opt_bool(&m, "exclude_authors");
        Some(ApprovalPolicy {
            approvers: approvers?,
            policy: policy?,
            timeout: timeout?,
            fresh_sign_in: fresh_sign_in?,
            requester_can_approve,
            exclude_authors,
        })
    }

    pub(super) fn approval_mode(&mut self, v: &V<'_>) -> Option<ApprovalMode> {
        match &v.node.value {
            Value::Map(_) => {
                let m = self.map(v, "`{ n: NUMBER }`", &["n"])?;
                let n = self.required(&m, "n")?;
                self.whole(&n, fields::APPROVALS_NEEDED)
                    .map(ApprovalMode::AtLeast)
            }
            _ => {
                let text = self.text(v, "an approval policy `any`, `all` or `{ n: NUMBER }`")?;
                match text.as_str() {
                    "any" => Some(ApprovalMode::Any),
                    "all" => Some(ApprovalMode::All),
                    other => {
                        self.at(
                            v,
                            format!("unknown approval policy `{other}`; expected `any`, `all` or `{{ n: NUMBER }}`"),
                        );
                        None
                    }
                }
            }
        }
    }

    pub(super) fn gates(&mut self, v: &V<'_>) -> Option<Gates> {
        let m = self.map(v, "gates `{ before: {...}, after: {...} }`", GATES_KEYS)?;
        let before = match m.get("before") {
            Some(b) => self.gate_policy(&b).map(Some),
            None => Some(None),
        };
        let after = match m.get("after") {
            Some(a) => self.gate_policy(&a).map(Some),
            None => Some(None),
        };
        Some(Gates {
            before: before?,
            after: after?,
        })
    }

    pub(super) fn gate_policy(&mut self, v: &V<'_>) -> Option<GatePolicy> {
        let m = self.map(v, "a gate with `checks`", GATE_KEYS)?;
        let delay = self.opt_duration(&m, "delay", fields::GATE_DELAY);
        let positive = |r: &mut Self, key: &str, field: DurationField| match m.get(key) {
            Some(x) => r.duration(&x).and_then(|d| {
                if field.accepts(d) {
                    Some(d)
                } else {
                    r.at(&x, format!("`{key}` must be longer than 0s"));
                    None
                }
            }),
            None => Some(field.default),
        };
        let interval = positive(self, "interval", fields::GATE_INTERVAL);
        let timeout = positive(self, "timeout", fields::GATE_TIMEOUT);
        let steady = self.opt_duration(&m, "steady", fields::GATE_STEADY);
        let checks = self.required(&m, "checks").and_then(|c| {
            let items = self.list(&c, "checks")?;
            if items.is_empty() {
                self.at(&c, "a gate needs at least one check");
                return None;
            }
            self.each(items, |r, item| r.check(item))
        });
        Some(GatePolicy {
            delay,
            interval: interval?,
            timeout: timeout?,
            steady,
            checks: checks?,
        })
    }

    pub(super) fn check(&mut self, v: &V<'_>) -> Option<GateCheck> {
        let (kind, m) = self.kinded(v, "check", CHECK_KINDS, CHECK_COMMON)?;
        let name = m.get("name").and_then(|n| self.text(&n, "a check name"));
        let consecutive_successes = match m.get("consecutive_successes") {
            Some(c) => self.whole(&c, fields::CONSECUTIVE_SUCCESSES),
            None => Some(1),
        };
        let on_inconclusive = match m.get("on_inconclusive") {
            Some(o) => self.choice(&o, "inconclusive policy", InconclusivePolicy::WORDS),
            None => Some(InconclusivePolicy::Fail),
        };
        let body = self.required(&m, kind)?;
        let kind = match kind {
            "http" => {
                let hm = self.map(
                    &body,
                    "`{ url: URL, success: EXPRESSION }`",
                    HTTP_CHECK_KEYS,
                )?;
                let url = self.url(&hm, "url");
                let method = self.http_method(&hm);
                let headers = hm
                    .get("headers")
                    .map(|h| self.header_map(&h))
                    .unwrap_or_default();
                let body = hm.get("body").and_then(|b| self.text(&b, "a request body"));
                let timeout = match hm.get("timeout") {
                    Some(t) => self.duration(&t),
                    None => Some(fields::HTTP_CHECK_TIMEOUT.default),
                };
                let success = match hm.get("success") {
                    Some(s) => self
                        .non_empty(&s, "a success expression")
                        .filter(|expr| self.success_expression(&s, expr)),
                    None => Some(defaults::HTTP_SUCCESS.to_owned()),
                };
                match (url, method, timeout, success) {
                    (Some(url), Some(method), Some(timeout), Some(success)) => {
                        Some(CheckKind::Http {
                            method,
                            url,
                            headers,
                            body,
                            timeout,
                            success,
                        })
                    }
                    _ => None,
                }
            }
            "prometheus" => {
                let pm = self.map(
                    &body,
                    "`{ server: URL, query: PROMQL, threshold: \"< 0.01\" }`",
                    PROMETHEUS_KEYS,
                )?;
                let server = self.url(&pm, "server");
                let query = self
                    .required(&pm, "query")
                    .and_then(|q| self.non_empty(&q, "a PromQL query"));
                let threshold = self.required(&pm, "threshold").and_then(|t| {
                    self.parsed(&t, "a threshold such as `< 0.01`", Threshold::parse)
                });
                match (server, query, threshold) {
                    (Some(server), Some(query), Some(threshold)) => Some(CheckKind::Prometheus {
                        server,
                        query,
                        threshold,
                    }),
                    _ => None,
                }
            }
            "command" => {
                let run = if matches!(body.node.value, Value::Map(_)) {
                    let cm = self.map(&body, "`{ run: COMMAND }`", COMMAND_KEYS)?;
                    let r = self.required(&cm, "run")?;
                    self.non_empty(&r, "a command")
                } else {
                    self.non_empty(&body, "a command")
                };
                run.map(|run| CheckKind::Command { run })
            }
            _ => self
                .extension(&body, &m, "check")
                .map(|(name, with)| CheckKind::Extension { name, with }),
        };
        Some(GateCheck {
            name,
            kind: kind?,
            consecutive_successes: consecutive_successes?,
            on_inconclusive: on_inconclusive?,
        })
    }

    /// Compiles a CEL success expression; an error is reported at the
    /// `success` field with its position inside the expression.
    pub(super) fn success_expression(&mut self, v: &V<'_>, expr: &str) -> bool {
        match crate::domain::gates::compile_success(expr) {
            Ok(()) => true,
            Err(e) => {
                self.at(v, e.to_string());
                false
            }
        }
    }

    pub(super) fn header_map(&mut self, v: &V<'_>) -> BTreeMap<String, String> {
        self.named_map(
            v,
            "headers",
            fields::is_header_name,
            |name| format!("invalid HTTP header name `{name}`"),
            |r, value| r.text(value, "a header value"),
        )
    }
}
