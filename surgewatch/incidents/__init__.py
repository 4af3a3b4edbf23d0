"""Incidents: the lifecycle (quiet -> watch -> warning -> critical -> resolved) and the
planned-events calendar."""
