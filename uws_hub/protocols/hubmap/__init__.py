"""The HuBMAP User Workspaces Server's API, served by uws-hub (``c.HubMAPCompat``).

Clients written against HuBMAP's server (above all the HuBMAP portal) point
their workspaces endpoint at ``<hub>/hub/api/hubmap`` and keep working: the
same routes (with or without the trailing slash), envelope, status codes,
field names and status values, translated to uws-hub's services.

- :mod:`.config`: the options (:class:`HubMAPCompat`);
- :mod:`.models`: pure translation of uws-hub's objects to HuBMAP's and of
  HuBMAP's requests to uws-hub's (unit-tested without a hub);
- :mod:`.store`: what HuBMAP keeps per workspace that uws-hub does not
  (the default job type, the create request's file and symlink names);
- :mod:`.tokens`: ``POST tokens`` (a client token vouching for a user, or a
  Globus token);
- :mod:`.datasets`: dataset symlinks (``dataset_uuid`` looked up, targets
  under the admin's dataset roots only);
- :mod:`.handlers`: the routes.
"""

from .config import HubMAPCompat

__all__ = ["HubMAPCompat"]
