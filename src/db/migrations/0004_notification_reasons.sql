-- Each notification's reason as a stable code (`reason_code`: paid, already_paid,
-- refund_notice, bad_signature, amount_mismatch, …) beside the human detail (`reason`),
-- so notifications can be filtered and counted by why they got their verdict. Rows
-- stored before this migration keep their detail and have no code.
ALTER TABLE notifications ADD COLUMN reason_code TEXT;
