"""uws-hub's Jinja templates, shipped as package data (``uws_hub.templates``).

The folder lives at ``share/templates/`` in the repository and is mapped to
this package by ``package_dir`` in setup.cfg, so that the templates are found
the same way in a wheel and in an editable install.
"""

import os

TEMPLATE_DIR = os.path.dirname(os.path.abspath(__file__))
