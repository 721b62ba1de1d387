DROP INDEX deployments_runner_state;
DROP INDEX deployments_one_active;
ALTER TABLE deployments DROP COLUMN error;
