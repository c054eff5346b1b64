"""The optimizer service of the HVAC control mesh."""
