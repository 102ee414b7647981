"""Accounts: who a hub user is on the machine and in the local accounts database.

- :mod:`.system`: :class:`SystemAccounts`, hub users to the system accounts that own
  their files and run their jobs (``UWSHub.system_users``).
- :mod:`.service`: :class:`LocalAccountService`, what the accounts API and page do
  with local accounts (create, change, disable), over the local authenticator.
- :mod:`.access`: who may see and change which local account (JupyterHub's rules).

The accounts themselves (passwords, lockout, sign-up) are the local
authenticator's: :mod:`uws_hub.authenticators.local`.
"""
