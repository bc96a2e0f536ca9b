"""The recording service: one complete, ordered record of every interaction."""
