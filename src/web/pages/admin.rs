//! `/admin/users` (admins only): every user with their role and groups;
//! change a role, add or remove local groups, disable or enable an account.
//! Each form carries the CSRF token, calls `engine::users::change_user`
//! (one transaction with its audit record) and comes back to the list.
//! SSO groups are shown but not edited: the provider's groups claim
//! replaces them at every SSO sign-in.

use actix_session::Session;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::render;
use super::see_other;
use crate::domain::Role;
use crate::domain::authz::Action;
use crate::engine::users::{self, UserChange};
use crate::storage::GROUP_SOURCE_SSO;
use crate::web::auth::CurrentUser;
use crate::web::nav::Nav;
use crate::web::session::check_csrf;
use crate::web::views::time;
use crate::web::{State, WebError};

/// The URL of the page.
pub const USERS_URL: &str = "/admin/users";

pub struct GroupView {
    pub name: String,
    pub sso: bool,
}

pub struct UserView {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub role: Role,
    pub role_label: &'static str,
    pub sign_in: &'static str,
    pub disabled: bool,
    pub groups: Vec<GroupView>,
    pub created: String,
    pub is_me: bool,
}

impl UserView {
    pub fn action(&self, what: &str) -> String {
        format!("{USERS_URL}/{}/{what}", self.id)
    }
}

/// A role choice of the role form.
pub struct RoleOption {
    pub value: &'static str,
    pub label: &'static str,
}

#[derive(Template)]
#[template(path = "pages/admin/users.html")]
pub struct UsersPage {
    pub nav: Nav,
    pub users: Vec<UserView>,
    pub roles: Vec<RoleOption>,
}

/// `GET /admin/users`
pub async fn list(state: State, nav: Nav, user: CurrentUser) -> Result<HttpResponse, WebError> {
    let me = user.require_action(Action::ManageUsers)?.id;
    let rows = state
        .with_conn::<_, WebError, _>(|conn| Ok(users::list_users(conn)?))
        .await?;
    let users = rows
        .into_iter()
        .map(|u| UserView {
            is_me: u.id == me,
            id: u.id,
            display_name: u.display_name,
            email: u.email.unwrap_or_default(),
            role: u.role,
            role_label: u.role.label(),
            sign_in: match (u.local, u.sso) {
                (true, true) => "password and SSO",
                (false, true) => "SSO",
                (true, false) => "password",
                (false, false) => "none",
            },
            disabled: u.disabled,
            groups: u
                .groups
                .into_iter()
                .map(|(name, source)| GroupView {
                    name,
                    sso: source == GROUP_SOURCE_SSO,
                })
                .collect(),
            created: time(&u.created_at),
            username: u.username,
        })
        .collect();
    render(&UsersPage {
        nav,
        users,
        roles: Role::ALL
            .iter()
            .map(|r| RoleOption {
                value: r.as_str(),
                label: r.label(),
            })
            .collect(),
    })
}

#[derive(Debug, Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub csrf: String,
}

async fn apply(
    state: State,
    session: Session,
    user: CurrentUser,
    id: i64,
    csrf: &str,
    change: Result<UserChange, WebError>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, csrf)?;
    let actor = user.require_action(Action::ManageUsers)?.as_user();
    let change = change?;
    state
        .with_conn::<_, WebError, _>(move |conn| Ok(users::change_user(conn, id, &change, &actor)?))
        .await?;
    Ok(see_other(format!("{USERS_URL}#user-{id}")))
}

/// Defines a `POST /admin/users/{id}/…` handler: `$change` reads the
/// change from the form, `apply` checks the CSRF token and the role, makes
/// it and comes back to the list.
macro_rules! change_handler {
    ($(#[$doc:meta])* $name:ident, |$form:ident| $change:expr) => {
        $(#[$doc])*
        pub async fn $name(
            state: State,
            session: Session,
            user: CurrentUser,
            path: web::Path<i64>,
            $form: web::Form<ChangeForm>,
        ) -> Result<HttpResponse, WebError> {
            let change = $change;
            apply(state, session, user, path.into_inner(), &$form.csrf, change).await
        }
    };
}

fn group_of(form: &ChangeForm) -> Result<String, WebError> {
    let group = form.group.trim();
    let group = group.strip_prefix("group:").unwrap_or(group);
    if group.is_empty() {
        return Err(WebError::Unprocessable("Name the group.".into()));
    }
    Ok(group.to_string())
}

change_handler!(
    /// `POST /admin/users/{id}/role` (`role`)
    set_role,
    |form| form
        .role
        .parse::<Role>()
        .map(UserChange::Role)
        .map_err(|e| WebError::Unprocessable(e.to_string()))
);

change_handler!(
    /// `POST /admin/users/{id}/groups` (`group`): adds a local membership.
    add_group,
    |form| group_of(&form).map(UserChange::AddGroup)
);

change_handler!(
    /// `POST /admin/users/{id}/groups/remove` (`group`): ends a local membership.
    remove_group,
    |form| group_of(&form).map(UserChange::RemoveGroup)
);

change_handler!(
    /// `POST /admin/users/{id}/disable`: the account's sessions and tokens stop working.
    disable,
    |form| Ok(UserChange::Disabled(true))
);

change_handler!(
    /// `POST /admin/users/{id}/enable`
    enable,
    |form| Ok(UserChange::Disabled(false))
);
