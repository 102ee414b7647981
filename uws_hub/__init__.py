"""uws-hub: a workspaces hub for research computing, built on JupyterHub."""

import sys

from ._version import __version__

# jsonschema, which JupyterHub imports (through jupyter_events), imports rfc3987_syntax
# when it is installed (jsonschema[format-nongpl]) for its "iri" formats, and that
# module compiles a large grammar as it is imported: half of the hub's start-up time.
# No schema the hub validates against (JupyterHub's event schemas) has an "iri"
# format, so uws-hub leaves the module out: None in sys.modules makes its import an
# ImportError, which jsonschema takes as "not installed". setdefault: a process
# that imported it before keeps it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

__all__ = ["__version__"]
