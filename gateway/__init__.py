"""The gateway: the only process clients talk to (HTTP and WebSocket; docs/realtime.md)."""
