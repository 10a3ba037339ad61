"""Route modules of the gateway, one per area of the public API.

Each module has a `routes` table (gateway.api.Routes) and may have a
`setup(app, settings)` that adds the resources it needs (cleanup_ctx entries).
"""
