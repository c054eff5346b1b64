"""The audit service of the HVAC control mesh."""
