ALTER TABLE deployments DROP COLUMN override_reason;
ALTER TABLE deployments DROP COLUMN override_by;
ALTER TABLE deployments DROP COLUMN operation;
