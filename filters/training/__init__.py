"""Offline tooling of the intent classifier: its training corpus (template families) and the script
that trains it and calibrates its thresholds. Nothing here runs in a deployment."""
