"""Triggers: what starts a job besides a direct request (cron lives in `engine.scheduler`)."""
