"""Sharing workspaces: live collaboration, and copies sent to someone.

- :mod:`.collaborate`: :class:`ShareService`, collaborate shares and the
  JupyterHub roles that follow them (role sync).
- :mod:`.copies`: copy shares: invitations, accept/decline, the reconciler's
  steps that make a copy.
- :mod:`.posixgroups`: a POSIX group per shared workspace (editors on disk).
- :mod:`.recipients`: finding users and groups to share with.
- :mod:`.models`: shares as the API shows them.
"""
