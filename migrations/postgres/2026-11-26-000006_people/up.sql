-- People (issue 5): where a group membership comes from. `local` ones are
-- managed on /admin/users and by the CLI; `sso` ones are replaced from the
-- identity provider's groups claim at every SSO sign-in.
ALTER TABLE user_groups ADD COLUMN source TEXT NOT NULL DEFAULT 'local';

-- The audit page filters by actor and by subject, newest first.
CREATE INDEX audit_events_actor_id ON audit_events (actor, id);
CREATE INDEX audit_events_subject_id ON audit_events (subject, id);
