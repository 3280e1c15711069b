"""clinicsync: a clinic's booking system and its bridge to the practice-management system."""

__version__ = "0.1.0"
