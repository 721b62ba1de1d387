//! What starts work by itself: the cron schedules of stages
//! (`scheduler`, `schedules`), and a push webhook's delivery that queues a
//! build (`push`).

pub mod push;
pub mod scheduler;
pub mod schedules;
