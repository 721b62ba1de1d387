DROP INDEX gate_samples_run;
ALTER TABLE gate_samples DROP COLUMN scheduled_at;
ALTER TABLE gate_samples DROP COLUMN body;
ALTER TABLE gate_samples DROP COLUMN gate_run_id;
DROP INDEX gate_runs_deployment;
DROP INDEX gate_runs_state;
DROP TABLE gate_runs;
