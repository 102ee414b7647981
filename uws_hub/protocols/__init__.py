"""Other protocols served by the hub: thin facades over uws-hub's own services.

Each translates a foreign API's requests and answers to uws-hub's services
and holds no rules of its own: authorization, quotas, limits and events are
the services'. One package per protocol (see DESIGN.md, "Protocols are thin
facades").
"""


def base_path(value: str, option: str, example: str) -> str:
    """A protocol's ``base_path`` option, checked: a relative URL path without empty,
    ``.`` or ``..`` parts (ValueError naming ``option`` otherwise)."""
    path = value.strip("/")
    if not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"{option} must be a path such as {example!r}, not {value!r}")
    return path
