# Serves the workspace's streamlit_app.py as an ASGI app, so that uvicorn can
# listen on a Unix socket (`streamlit run` listens on a TCP port, which every
# account on the machine can reach, and has no way to check who connects).
# Run by the Streamlit job type (uws_hub.jobs.examples) in the workspace.
import streamlit as st
from streamlit import config

app = st.App("streamlit_app.py")
# What `streamlit run` would take from its flags or STREAMLIT_* variables, which
# uvicorn does not read (the workspace's .streamlit/config.toml still counts):
# no usage statistics sent from visitors' browsers to the network, and no
# developer menu (Deploy, Clear cache) for visitors.
config.get_config_options(
    force_reparse=True,
    options_from_flags={"browser.gatherUsageStats": False, "client.toolbarMode": "viewer"},
)
