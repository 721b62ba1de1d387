//! `/admin/notifications` (admins only): the outgoing notifications of
//! every pipeline, newest first and keyset-paginated (`?before=<id>`), with
//! where each delivery stands; a failed one can be retried now (CSRF,
//! audited as `notification.retry` by `Deliveries::retry_now`).

use actix_session::Session;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::render;
use super::see_other;
use crate::domain::DeliveryState;
use crate::domain::authz::Action;
use crate::storage::notifications as store;
use crate::web::auth::CurrentUser;
use crate::web::nav::Nav;
use crate::web::session::check_csrf;
use crate::web::views::{iso, time};
use crate::web::{State, WebError, urls};

/// The URL of the page.
pub const NOTIFICATIONS_URL: &str = "/admin/notifications";

/// Deliveries per page.
pub const PAGE_SIZE: i64 = 50;

pub struct DeliveryView {
    pub id: i64,
    pub at: String,
    pub at_iso: String,
    pub pipeline: String,
    pub pipeline_url: String,
    pub event: String,
    pub target: String,
    pub url: String,
    pub format: String,
    /// `delivered`, `failed`, or `pending` with when it is tried next.
    pub state: String,
    pub state_class: &'static str,
    pub symbol: &'static str,
    pub attempts: i32,
    pub last_status: String,
    pub last_error: String,
    pub failed: bool,
    pub retry_url: String,
}

#[derive(Template)]
#[template(path = "pages/admin/notifications.html")]
pub struct NotificationsPage {
    pub nav: Nav,
    pub deliveries: Vec<DeliveryView>,
    pub older_url: Option<String>,
    pub newest_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct NotificationsQuery {
    pub before: Option<i64>,
}

fn page_url(before: Option<i64>) -> String {
    match before {
        Some(id) => format!("{NOTIFICATIONS_URL}?before={id}"),
        None => NOTIFICATIONS_URL.to_string(),
    }
}

/// `GET /admin/notifications`
pub async fn list(
    state: State,
    nav: Nav,
    user: CurrentUser,
    query: web::Query<NotificationsQuery>,
) -> Result<HttpResponse, WebError> {
    user.require_action(Action::ManageUsers)?;
    let before = query.before;
    let rows = state
        .with_conn::<_, WebError, _>(move |conn| {
            Ok(store::list_deliveries(conn, before, PAGE_SIZE + 1)?)
        })
        .await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    let deliveries: Vec<DeliveryView> = rows
        .into_iter()
        .take(PAGE_SIZE as usize)
        .map(|r| {
            let (state_class, symbol, state) = match r.state {
                DeliveryState::Delivered => ("ok", "✔", "delivered".to_string()),
                DeliveryState::Failed => ("bad", "✖", "failed".to_string()),
                DeliveryState::Pending if r.attempts == 0 => ("queued", "◷", "pending".to_string()),
                DeliveryState::Pending => (
                    "waiting",
                    "↻",
                    format!("pending, next attempt {}", time(&r.next_attempt_at)),
                ),
            };
            DeliveryView {
                id: r.id,
                at: time(&r.created_at),
                at_iso: iso(&r.created_at),
                pipeline_url: urls::pipeline(&r.pipeline),
                pipeline: r.pipeline,
                event: r.event.replace('_', " "),
                target: r.notification,
                url: r.url,
                format: r.format,
                state,
                state_class,
                symbol,
                attempts: r.attempts,
                last_status: r
                    .last_status
                    .map(|s| format!("HTTP {s}"))
                    .unwrap_or_default(),
                last_error: r.last_error.unwrap_or_default(),
                failed: r.state == DeliveryState::Failed,
                retry_url: format!("{NOTIFICATIONS_URL}/{}/retry", r.id),
            }
        })
        .collect();
    let older_url = match deliveries.last() {
        Some(last) if more => Some(page_url(Some(last.id))),
        _ => None,
    };
    render(&NotificationsPage {
        nav,
        deliveries,
        newest_url: before.map(|_| page_url(None)),
        older_url,
    })
}

#[derive(Debug, Deserialize)]
pub struct RetryForm {
    #[serde(default)]
    pub csrf: String,
}

/// `POST /admin/notifications/{id}/retry`: one more attempt of a failed delivery, now.
pub async fn retry(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<i64>,
    form: web::Form<RetryForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let actor = user.require_action(Action::ManageUsers)?.username.clone();
    let id = path.into_inner();
    state.engine.notifications().retry_now(id, &actor).await?;
    Ok(see_other(format!("{NOTIFICATIONS_URL}#delivery-{id}")))
}
