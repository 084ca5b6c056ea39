-- A device's kind is fixed by the enrollment code its user created, never by the device
-- (issue 21, docs/adr/0111-device-kind-from-enrollment-code.md). Codes made before this column
-- enroll device agents.
ALTER TABLE device_enrollments ADD COLUMN kind TEXT NOT NULL DEFAULT 'device_agent';
