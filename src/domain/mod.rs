//! The pure domain model: names, durations, schedules, versions, the
//! pipeline definition (with its YAML form) and the deployment/build state
//! machines. No I/O, no database, no HTTP; every rule here is unit tested.
//!
//! Everything public is re-exported from this module, so callers write
//! `use crate::domain::{PipelineDefinition, StageName, DeploymentState};`.

pub mod approval;
pub mod authz;
pub mod build;
pub mod definition;
pub mod deployment;
pub mod duration;
pub mod error;
pub mod gate_eval;
pub mod gates;
pub mod names;
pub mod rules;
pub mod schedule;
pub mod secrets;
pub mod slot_ops;
pub mod states;
mod text;
pub use text::{Count, plural};
pub mod version;
pub mod waiting;
pub mod webhook;

pub use approval::{ApprovalState, Decision};
pub use build::{PastDeployment, TaskRunState, branch_may_build, release_to_fix, secrets_withheld};
pub use definition::yaml::{
    DefinitionError, DefinitionErrors, EXAMPLE_YAML, MAX_DEFINITION_BYTES, definition_too_large,
    parse_definition, to_canonical_yaml,
};
pub use definition::{
    App, ApprovalMode, ApprovalOrder, ApprovalPolicy, Approvals, Approver, BranchFilter, Build,
    CheckKind, CompareOp, Environment, GateCheck, GatePolicy, Gates, InconclusivePolicy,
    PipelineDefinition, QueueMode, QueuePolicy, SecretRef, Setting, Source, Stage, TaskKind,
    TaskSpec, Threshold, Trigger, Upstream,
};
pub use deployment::{BuildEvent, BuildState, DeploymentEvent, DeploymentState, Role};
pub use duration::Duration;
pub use error::DomainError;
pub use names::{AppName, PipelineName, SlotName, StageName};
pub use schedule::{Cron, Schedule, TriggerOutcome, parse_timezone};
pub use slot_ops::SlotOperation;
pub use states::{DeliveryState, GateRunState, Phase, SlotProcessState, SwapState};
pub use version::{Version, VersionContext, VersionTemplate};
