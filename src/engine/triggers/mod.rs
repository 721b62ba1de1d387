//! What starts work by itself: the scheduler that fires the cron schedules
//! of stages (`scheduler`; a stage's schedule and its fires are read in
//! `pipelines::schedules`), and a push webhook's delivery that queues a
//! build (`push`). Polling a branch runs in `runtime/poll.rs`.

pub mod push;
pub mod scheduler;
