DROP INDEX builds_pipeline_state;
DROP TABLE source_heads;
