DROP INDEX slot_swaps_app_id;
DROP TABLE slot_swaps;
ALTER TABLE slots DROP COLUMN error;
ALTER TABLE slots DROP COLUMN previous_release_id;
ALTER TABLE slots DROP COLUMN last_swap_at;
ALTER TABLE slots DROP COLUMN since;
ALTER TABLE slots DROP COLUMN settings;
