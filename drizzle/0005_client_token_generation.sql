DROP INDEX "auth_events_ip_failures_idx";--> statement-breakpoint
ALTER TABLE "oauth_clients" ADD COLUMN "token_generation" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX "auth_events_client_failure_addresses_idx" ON "auth_events" USING btree (("metadata"->>'address'),"created_at") WHERE "auth_events"."event_type" = 'client_auth_failure';