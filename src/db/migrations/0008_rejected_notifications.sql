-- Notifications that fail verification come from anyone who can reach /notify/*: such a
-- row keeps only the start of its body (`body`), with the length of what was received
-- (`body_length`) and the SHA-256 of all of it (`body_sha256`, hex), so a flood cannot
-- fill the disk while a person can still tell what came. Both are set on every row that
-- failed verification, NULL on rows that hold their whole body (verified ones, and every
-- row stored before this migration).
ALTER TABLE notifications ADD COLUMN body_length INTEGER;
ALTER TABLE notifications ADD COLUMN body_sha256 TEXT;
-- 1: the notification failed verification (parse, signature, app, content type, size),
-- so no platform vouches for it and `[notifications] keep_rejected` may delete it.
-- Earlier rows are marked by their reason code: exactly the codes for which
-- `RejectionCode::is_verification_failure` holds (a test compares the two).
ALTER TABLE notifications ADD COLUMN unverified INTEGER NOT NULL DEFAULT 0 CHECK (unverified IN (0, 1));
UPDATE notifications SET unverified = 1
    WHERE verdict = 'rejected' AND reason_code IN (
        'body_too_large', 'unsupported_content_type', 'malformed_body', 'missing_signature',
        'unsupported_sign_type', 'bad_signature', 'missing_field', 'malformed_field',
        'app_id_mismatch', 'seller_id_mismatch', 'provider_disabled',
        'missing_header', 'stale_timestamp', 'unknown_serial', 'unsupported_algorithm',
        'decrypt_failed', 'mchid_mismatch');

-- The retention job finds old unverified rows by time, and checks each against history.
CREATE INDEX notifications_unverified ON notifications (received_at) WHERE unverified = 1;
CREATE INDEX order_events_by_notification ON order_events (notification_id) WHERE notification_id IS NOT NULL;
