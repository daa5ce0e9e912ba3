"""Worker processes for a topology, the router between them, and the KV hand-off. See docs/structures.md."""
