"""uws-hub's version, single-sourced for setup.cfg and the app."""

__version__ = "0.1.0.dev0"
