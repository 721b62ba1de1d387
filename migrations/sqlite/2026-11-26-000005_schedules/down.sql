DROP INDEX deployments_stage_state_release;
DROP INDEX deployments_stage_release;
ALTER TABLE stages DROP COLUMN last_fire_detail;
ALTER TABLE stages DROP COLUMN last_fire_outcome;
DROP INDEX trigger_runs_stage_id;
DROP TABLE trigger_runs;
