-- Issue 13: a swap or rollback of slots into a slot that a stage owns is a
-- deployment of that stage. `operation` says what it does instead of the
-- stage's tasks (JSON: {"app", "from", "to", "preview"}); a release
-- manager's override of the stage's approvals and gates is kept with it.
ALTER TABLE deployments ADD COLUMN operation TEXT;
ALTER TABLE deployments ADD COLUMN override_by TEXT;
ALTER TABLE deployments ADD COLUMN override_reason TEXT;
