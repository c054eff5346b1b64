"""meshctl: the operator CLI of the HVAC control mesh."""
