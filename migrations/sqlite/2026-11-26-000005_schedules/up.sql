-- Triggers (issue 4): every fire of a scheduled trigger, and what it did.
-- One row per (stage, instant): the unique key backs the scheduler's claim
-- (a conditional update of stages.next_fire_at), so an instant is recorded
-- once however many instances share the database.
CREATE TABLE trigger_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    stage TEXT NOT NULL,
    -- the fire instant (UTC) the run belongs to
    scheduled_for TIMESTAMP NOT NULL,
    -- when it was handled (for `missed`: when the miss was noticed)
    fired_at TIMESTAMP NOT NULL,
    -- deployed | skipped | missed | failed
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    release_id BIGINT REFERENCES releases (id),
    deployment_id BIGINT REFERENCES deployments (id),
    -- the instance that handled it (`<host>/<id>`)
    instance TEXT NOT NULL,
    UNIQUE (pipeline_id, stage, scheduled_for)
);
CREATE INDEX trigger_runs_stage_id ON trigger_runs (pipeline_id, stage, id);

-- What the last fire of a stage's schedule did, kept with the stage so the
-- board shows it without reading trigger_runs.
ALTER TABLE stages ADD COLUMN last_fire_outcome TEXT;
ALTER TABLE stages ADD COLUMN last_fire_detail TEXT;

-- The newest release deployed to (or succeeded in) a stage: one index seek
-- each, for the scheduler's pick and the "why is this waiting" cells.
CREATE INDEX deployments_stage_release ON deployments (pipeline_id, stage, release_id);
CREATE INDEX deployments_stage_state_release ON deployments (pipeline_id, stage, state, release_id);
