//! Deployments: moving a release into a stage.
//!
//! - `requests` — the stage rules of `domain::rules` applied to a request,
//!   queueing (latest_only / sequence), continuous `after:` triggers,
//!   cancel, redeploy, reads for pages and the API.
//! - `run` — running a claimed deployment's tasks (shell, http, extension,
//!   `deploy_slot`, `swap_slots`).
//! - `approvals`, `gates` — what a deployment waits for before and after
//!   its tasks; `notify` — the notifications they send.
//! - `live` — each stage's one live release; `swaps` — a swap or rollback a
//!   person asks for, as a deployment of the stage that owns the slot.

pub mod approvals;
pub mod gates;
pub mod live;
pub mod notify;
pub mod requests;
pub mod run;
pub mod swaps;
pub mod transitions;
