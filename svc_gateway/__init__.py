"""The gateway service of the HVAC control mesh."""
