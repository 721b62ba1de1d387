//! `/audit`: the audit log, newest first, filtered by actor, action prefix
//! and subject, keyset-paginated (`?before=<record id>`). Release managers
//! and admins read it (`Action::ReadAudit`).

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::render;
use crate::domain::authz::Action;
use crate::storage::{self, AuditFilter};
use crate::web::auth::CurrentUser;
use crate::web::nav::Nav;
use crate::web::views::{iso, time};
use crate::web::{State, WebError, urls};

/// Records per page.
pub const PAGE_SIZE: i64 = 50;

pub struct RecordView {
    pub id: i64,
    pub at: String,
    pub at_iso: String,
    pub actor: String,
    pub actor_url: String,
    pub action: String,
    pub subject: String,
    pub subject_url: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "pages/audit.html")]
pub struct AuditPage {
    pub nav: Nav,
    pub records: Vec<RecordView>,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub filtered: bool,
    pub older_url: Option<String>,
    pub newest_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub subject: Option<String>,
    pub before: Option<i64>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `/audit` with these filters (and `before`, when set).
fn audit_url(filter: &AuditFilter, before: Option<i64>) -> String {
    let before = before.map(|b| b.to_string()).unwrap_or_default();
    format!(
        "/audit{}",
        urls::query(&[
            ("actor", filter.actor.as_deref().unwrap_or_default()),
            (
                "action",
                filter.action_prefix.as_deref().unwrap_or_default()
            ),
            ("subject", filter.subject.as_deref().unwrap_or_default()),
            ("before", &before),
        ])
    )
}

/// `GET /audit`
pub async fn list(
    state: State,
    nav: Nav,
    user: CurrentUser,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, WebError> {
    user.require_action(Action::ReadAudit)?;
    let filter = AuditFilter {
        actor: given(&query.actor),
        action_prefix: given(&query.action),
        subject: given(&query.subject),
    };
    let before = query.before;
    let search = filter.clone();
    let rows = state
        .with_conn::<_, WebError, _>(move |conn| {
            Ok(storage::search_audit(conn, &search, before, PAGE_SIZE + 1)?)
        })
        .await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    let records: Vec<RecordView> = rows
        .into_iter()
        .take(PAGE_SIZE as usize)
        .map(|r| RecordView {
            id: r.id,
            at: time(&r.at),
            at_iso: iso(&r.at),
            actor_url: audit_url(
                &AuditFilter {
                    actor: Some(r.actor.clone()),
                    ..AuditFilter::default()
                },
                None,
            ),
            subject_url: audit_url(
                &AuditFilter {
                    subject: Some(r.subject.clone()),
                    ..AuditFilter::default()
                },
                None,
            ),
            actor: r.actor,
            action: r.action,
            subject: r.subject,
            detail: r.detail,
        })
        .collect();
    let older_url = match records.last() {
        Some(last) if more => Some(audit_url(&filter, Some(last.id))),
        _ => None,
    };
    render(&AuditPage {
        nav,
        records,
        filtered: filter != AuditFilter::default(),
        actor: filter.actor.clone().unwrap_or_default(),
        action: filter.action_prefix.clone().unwrap_or_default(),
        subject: filter.subject.clone().unwrap_or_default(),
        newest_url: before.map(|_| audit_url(&filter, None)),
        older_url,
    })
}
