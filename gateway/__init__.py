"""The gateway: the only process clients talk to (HTTP and WebSocket, DESIGN.md §2, §6-7)."""
