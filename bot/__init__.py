"""Discord front-end of the orchestrator: slash commands in, rendered results out. No business rule here."""
