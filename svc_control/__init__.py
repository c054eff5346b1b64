"""The control service of the HVAC control mesh."""
