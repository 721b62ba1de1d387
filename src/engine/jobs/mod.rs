//! The job runtime's parts that builds and deployments share: a job runs
//! its tasks as process groups through `runner` (one log writer, one
//! masker), with its secrets resolved one way (`env`).

pub mod runner;
