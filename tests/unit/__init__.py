"""In-process tests: no hub, no root, seconds."""
