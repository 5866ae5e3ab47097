"""Retention: policies, sweeps, legal holds, subject erasure, export and consent withdrawal."""
