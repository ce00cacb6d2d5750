"""Fleets that render jobs, behind one interface."""
