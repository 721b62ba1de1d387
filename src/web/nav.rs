//! What every page's header needs ([`Nav`]): who is signed in, their role
//! and waiting approvals, the CSRF token for the sign-out button, the
//! current path, and the message the last form left.

use std::future::{Ready, ready};

use actix_session::SessionExt;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};

use super::auth::{AuthUser, WaitingApprovals};
use super::session::{csrf_token, take_flash};
use crate::domain::authz::Action;

/// What every page's layout needs: who is signed in, and the CSRF token
/// for the sign-out button.
#[derive(Debug, Clone)]
pub struct Nav {
    pub user: Option<String>,
    pub role: Option<&'static str>,
    pub csrf: String,
    /// The current path, for "sign in and come back here".
    pub here: String,
    /// The signed-in user's role, for [`Nav::may`].
    pub rank: Option<crate::domain::Role>,
    /// How many approvals wait for the signed-in user ("Approvals (N)"),
    /// counted once per page request by [`super::auth::authenticate`].
    pub approvals: Option<usize>,
    /// What the last form did ("1.0.2 is queued for test."), shown once
    /// at the top of the next page (see [`super::session::set_flash`]).
    pub flash: Option<String>,
}

impl Nav {
    /// For pages rendered without a request: nobody signed in. (An error
    /// page starts with it; [`super::error::with_nav`] renders it again
    /// with the request's.)
    pub fn anonymous() -> Nav {
        Nav {
            user: None,
            role: None,
            csrf: String::new(),
            here: "/".into(),
            rank: None,
            approvals: None,
            flash: None,
        }
    }

    /// Whether the signed-in user may take `action` (to show or hide a
    /// form; the handler decides again).
    pub fn may(&self, action: Action) -> bool {
        self.rank
            .is_some_and(|role| crate::domain::authz::allowed(role, action))
    }

    /// How a navigation link to `section` marks the current page:
    /// `aria-current="page"` on the page itself, `"true"` on a page under
    /// it (a pipeline under the release board, one gate under the gates),
    /// nothing elsewhere. The stylesheet gives both a visible bar.
    pub fn current(&self, section: &str) -> Option<&'static str> {
        let path = self.here.split('?').next().unwrap_or_default();
        if path == section {
            return Some("page");
        }
        let under = match section {
            "/" => path.starts_with("/pipelines/"),
            _ => path
                .strip_prefix(section)
                .is_some_and(|rest| rest.starts_with('/')),
        };
        under.then_some("true")
    }

    /// `/login?next=<this page>`
    pub fn login_url(&self) -> String {
        format!("/login{}", super::urls::query(&[("next", &self.here)]))
    }
}

impl Nav {
    /// The navigation of `req`: its signed-in user (set by
    /// [`super::auth::authenticate`]) and their waiting approvals, the
    /// session's CSRF token, and the path. Pages get it as an extractor;
    /// error pages from [`super::error::with_nav`], so every page of a
    /// signed-in person has the same header, after a form post too.
    pub fn of(req: &HttpRequest) -> Nav {
        let session = req.get_session();
        let user = req.extensions().get::<AuthUser>().cloned();
        let approvals = req.extensions().get::<WaitingApprovals>().map(|w| w.0);
        let here = match req.uri().query() {
            Some(q) => format!("{}?{q}", req.path()),
            None => req.path().to_string(),
        };
        // A page shows the message once; a form post leaves it for the
        // page it redirects to.
        let flash = if req.method() == actix_web::http::Method::GET {
            take_flash(&session)
        } else {
            None
        };
        Nav {
            flash,
            rank: user.as_ref().map(|u| u.role),
            role: user.as_ref().map(|u| u.role.label()),
            user: user.map(|u| u.username),
            csrf: csrf_token(&session),
            here,
            approvals,
        }
    }
}

impl FromRequest for Nav {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Nav::of(req)))
    }
}
