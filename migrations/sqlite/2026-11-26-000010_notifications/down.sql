DROP INDEX notification_deliveries_due;
DROP TABLE notification_deliveries;
