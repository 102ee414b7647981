# Loaded by the Jupyter servers of uws-hub's workspace jobs (JUPYTER_CONFIG_PATH);
# see uws_hub/serverconfig/__init__.py.
import os
import sys

if "get_config" in globals():  # loaded as a config file by Jupyter Server (not imported)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    c = get_config()  # noqa: F821
    c.HubOAuth.cache_max_age = max(1, int(os.environ.get("UWS_SERVER_AUTH_CACHE_SECONDS", "1")))
    c.ServerApp.authorizer_class = "uws_server_auth.WorkspaceAuthorizer"
    # merged with the extensions enabled elsewhere, not replacing them
    c.ServerApp.jpserver_extensions.update({"uws_server_auth": True})
    # the job type's web app. An error here must not undo the lines above (a config
    # file that raises is skipped whole): the guard stops a server whose app is missing
    try:
        import uws_apps
        import uws_server_auth

        app = uws_server_auth.web_app()
        if app is not None:
            uws_apps.configure(c, app)
    except Exception:
        import traceback

        traceback.print_exc()
