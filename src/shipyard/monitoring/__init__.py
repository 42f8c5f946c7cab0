"""Monitoring: service and model health, drift, prediction records, feedback, alerts."""
