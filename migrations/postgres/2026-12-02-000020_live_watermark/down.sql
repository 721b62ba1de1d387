DROP INDEX gate_runs_updated_at;
DROP INDEX task_runs_finished_at;
DROP INDEX task_runs_started_at;
