# Serves the workspace's streamlit_app.py as an ASGI app, so that uvicorn can
# listen on a Unix socket (`streamlit run` listens on a TCP port, which every
# account on the machine can reach, and has no way to check who connects).
# Run by the Streamlit job type (uws_hub.jobs.examples) in the workspace.
import streamlit as st

app = st.App("streamlit_app.py")
