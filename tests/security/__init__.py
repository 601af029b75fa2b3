"""Security tests: fuzzing, isolation, secrets, headers and settings, the audit log (README "Security")."""
