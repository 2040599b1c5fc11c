"""The gateway's calls to the owning services: `backends` (stubs, deadlines,
retries, error translation) and `calls` (the lookups and call patterns the
servicers and the chat orchestrator share)."""
