DROP INDEX audit_events_subject_id;
DROP INDEX audit_events_actor_id;
ALTER TABLE user_groups DROP COLUMN source;
