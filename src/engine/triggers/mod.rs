//! What starts deployments by itself: the cron schedules of stages
//! (`scheduler`, `schedules`).

pub mod scheduler;
pub mod schedules;
