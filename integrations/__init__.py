"""Talking to Label Studio (and, later, other tools)."""
