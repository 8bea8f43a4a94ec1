CREATE TABLE "oauth_clients" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"client_id" text NOT NULL,
	"name" text NOT NULL,
	"scopes" text[] NOT NULL,
	"secret_hash" text NOT NULL,
	"previous_secret_hash" text,
	"previous_secret_expires_at" timestamp with time zone,
	"disabled" boolean DEFAULT false NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL,
	"last_used_at" timestamp with time zone
);
--> statement-breakpoint
CREATE UNIQUE INDEX "oauth_clients_client_id_key" ON "oauth_clients" USING btree ("client_id");--> statement-breakpoint
CREATE INDEX "auth_events_ip_failures_idx" ON "auth_events" USING btree ("ip_address","created_at") WHERE "auth_events"."success" = false;--> statement-breakpoint
CREATE INDEX "auth_events_client_failures_idx" ON "auth_events" USING btree (("metadata"->>'clientId'),"created_at") WHERE "auth_events"."event_type" = 'client_auth_failure';