-- The live pages' watcher (engine::live) reads the newest start and end of
-- a task run and the newest change of a gate run a few times a second:
-- these indexes make each read one index lookup.
CREATE INDEX task_runs_started_at ON task_runs (started_at);
CREATE INDEX task_runs_finished_at ON task_runs (finished_at);
CREATE INDEX gate_runs_updated_at ON gate_runs (updated_at);
