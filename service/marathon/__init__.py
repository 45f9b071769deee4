"""Everything Marathon: task-id and JSON parsing (pure), the REST client and the event sources."""
