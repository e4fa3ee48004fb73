"""Automation: jobs, schedules and sensors that replace the old task queue and beat."""
