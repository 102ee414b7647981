"""uws-hub: a workspaces hub for research computing, built on JupyterHub."""

from ._version import __version__

__all__ = ["__version__"]
