"""``uws-singleuser``: the jobs' Jupyter server — JupyterHub's ``jupyterhub-singleuser``,
started without the grammar that jsonschema would compile as it is imported.

Jupyter Server imports jsonschema (through jupyter_events), which imports
``rfc3987_syntax`` when it is installed, and that module builds a parser of RFC
3987 at import: over half of the server's start (2.5 s of CPU → 1.1 s without it
on the test machine), time every launch of JupyterLab or of a web app waits.
Importing :mod:`uws_hub` leaves that module out (see ``uws_hub/__init__.py``);
everything else — arguments, environment, the ``jupyterhub.singleuser``
extension — is ``jupyterhub-singleuser``'s.
"""

from jupyterhub.singleuser import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
