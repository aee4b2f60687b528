"""Tasks: the work done for an event against one outside service each (plug-ins)."""
