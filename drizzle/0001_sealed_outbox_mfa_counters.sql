ALTER TABLE "email_outbox" ALTER COLUMN "text_body" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "email_outbox" ALTER COLUMN "max_attempts" SET DEFAULT 8;--> statement-breakpoint
ALTER TABLE "email_outbox" ADD COLUMN "body_sealed" text;--> statement-breakpoint
ALTER TABLE "email_outbox" ADD COLUMN "claim_id" uuid;--> statement-breakpoint
-- The default serves instances of the previous release during a rolling upgrade (they insert without it).
ALTER TABLE "email_outbox" ADD COLUMN "expires_at" timestamp with time zone DEFAULT now() + interval '72 hours' NOT NULL;--> statement-breakpoint
-- Rows written before this migration: a reset link lived 30 minutes, any other email 72 hours.
UPDATE "email_outbox" SET "expires_at" = "created_at" + CASE WHEN "kind" = 'password_reset' THEN interval '30 minutes' ELSE interval '72 hours' END;--> statement-breakpoint
-- Bodies of emails already delivered or given up on hold links nobody needs any more.
UPDATE "email_outbox" SET "text_body" = NULL WHERE "status" <> 'pending';--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "mfa_failure_count" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "mfa_failure_window_start" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "mfa_alerted_at" timestamp with time zone;