"""Docker: the Engine API client (sessions, TLS, API version, error contract), the container lookup
per slave (task id -> container and overlay IPs), and the reader of Weave-proxied containers."""
