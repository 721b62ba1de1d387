//! Domain enums stored as text: one `FromSql` per type, so rows carry
//! `DeploymentState`, `BuildState`, `Role`, `ApprovalState`, `Phase`,
//! `GateRunState`, `SwapState` and `DeliveryState` rather than strings. Writes use
//! `as_str()`; an unknown stored value is a deserialization error.
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, Queryable};
use diesel::sql_types::Text;

use crate::domain::{
    ApprovalState, BuildState, DeliveryState, DeploymentState, GateRunState, Phase, Role,
    SlotProcessState, SwapState, TaskRunState, TriggerOutcome,
};

macro_rules! text_enum {
    ($($ty:ty),* $(,)?) => {$(
        impl<DB> FromSql<Text, DB> for $ty
        where
            DB: Backend,
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                let text = String::from_sql(bytes)?;
                text.parse::<$ty>().map_err(|e| e.to_string().into())
            }
        }

        impl<DB> Queryable<Text, DB> for $ty
        where
            DB: Backend,
            $ty: FromSql<Text, DB>,
        {
            type Row = Self;

            fn build(row: Self) -> deserialize::Result<Self> {
                Ok(row)
            }
        }
    )*};
}

text_enum!(
    DeploymentState,
    BuildState,
    Role,
    TaskRunState,
    TriggerOutcome,
    ApprovalState,
    Phase,
    GateRunState,
    SwapState,
    DeliveryState,
    SlotProcessState,
);
