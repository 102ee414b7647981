"""Workspaces: directories of a user's work, with their life cycle.

- :mod:`.service`: :class:`WorkspaceService`, create, rename, delete (the rules).
- :mod:`.reconcile`: the reconciler's steps for a workspace being deleted.
- :mod:`.storage`: path-safe file work beneath a workspace, by descriptor.
- :mod:`.copying`: copying a workspace's tree (for copy shares), by descriptor.
- :mod:`.usage`: measuring every workspace's disk usage (a background loop's body).
"""
