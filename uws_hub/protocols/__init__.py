"""Other protocols served by the hub: thin facades over uws-hub's own services.

Each translates a foreign API's requests and answers to uws-hub's services
and holds no rules of its own: authorization, quotas, limits and events are
the services'. One package per protocol (see DESIGN.md, "Protocols are thin
facades").
"""
