-- Audit-log indexes end in (created_at, id) so they serve the admin queries' order (newest first, ties by id)
-- and their (createdAt, id) paging cursor. On a large auth_events table the rebuild blocks
-- writes to it for as long as it takes (seconds per million rows): run it off-peak.
DROP INDEX "auth_events_created_at_idx";--> statement-breakpoint
DROP INDEX "auth_events_ip_created_at_idx";--> statement-breakpoint
DROP INDEX "auth_events_email_created_at_idx";--> statement-breakpoint
DROP INDEX "auth_events_user_id_created_at_idx";--> statement-breakpoint
CREATE INDEX "auth_events_event_type_created_at_idx" ON "auth_events" USING btree ("event_type","created_at","id");--> statement-breakpoint
CREATE INDEX "auth_events_failures_created_at_idx" ON "auth_events" USING btree ("created_at") WHERE "auth_events"."success" = false;--> statement-breakpoint
CREATE INDEX "auth_events_created_at_idx" ON "auth_events" USING btree ("created_at","id");--> statement-breakpoint
CREATE INDEX "auth_events_ip_created_at_idx" ON "auth_events" USING btree ("ip_address","created_at","id");--> statement-breakpoint
CREATE INDEX "auth_events_email_created_at_idx" ON "auth_events" USING btree ("email","created_at","id");--> statement-breakpoint
CREATE INDEX "auth_events_user_id_created_at_idx" ON "auth_events" USING btree ("user_id","created_at","id");