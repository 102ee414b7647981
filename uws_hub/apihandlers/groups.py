"""JupyterHub's group API, refusing a new member who is being deleted.

A workspace shared with a group gives each of its members the share's roles and,
for an editor's share, the POSIX group (:mod:`uws_hub.sharing.collaborate`): a user
added to the group while they are being deleted (:mod:`uws_hub.accounts.deletions`)
was given them at the next share sync, during the delete, and a share with a group
that has such a member is refused for that reason. So adding one is a ``409``
(*"alice is being deleted"*) wherever JupyterHub adds members: ``POST
/hub/api/groups/{name}/users``, and a group made with members (``POST
/hub/api/groups/{name}``, ``POST /hub/api/groups``). Removing a member, and the
rest of the group API, stay JupyterHub's.
"""

from __future__ import annotations

from jupyterhub.apihandlers.groups import GroupAPIHandler as HubGroupAPIHandler
from jupyterhub.apihandlers.groups import GroupListAPIHandler as HubGroupListAPIHandler
from jupyterhub.apihandlers.groups import GroupUsersAPIHandler as HubGroupUsersAPIHandler
from jupyterhub.apihandlers.groups import _GroupAPIHandler


class NewMembersMixin(_GroupAPIHandler):
    """Members being added (every POST of the group API) must not be being deleted."""

    def _usernames_to_users(self, usernames):
        # JupyterHub's handlers turn the names of the members they add, or remove (DELETE), into users here
        users = super()._usernames_to_users(usernames)
        if self.request.method == "POST":
            self.settings["uws"].workspaces.deletions.check(*users)
        return users


class GroupListAPIHandler(NewMembersMixin, HubGroupListAPIHandler):
    pass


class GroupAPIHandler(NewMembersMixin, HubGroupAPIHandler):
    pass


class GroupUsersAPIHandler(NewMembersMixin, HubGroupUsersAPIHandler):
    pass


default_handlers = [
    (r"/api/groups", GroupListAPIHandler),
    (r"/api/groups/([^/]+)", GroupAPIHandler),
    (r"/api/groups/([^/]+)/users", GroupUsersAPIHandler),
]
