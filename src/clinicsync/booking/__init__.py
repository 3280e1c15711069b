"""Practitioners, availability, slot search, patients and appointments."""
