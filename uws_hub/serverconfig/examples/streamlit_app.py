# An example Streamlit app: uws-hub wrote it into this workspace because the
# workspace had no streamlit_app.py. Edit it (or replace it with your own app of
# that name) and reload the page. https://docs.streamlit.io
import streamlit as st

st.title("Example Streamlit app")
st.write("This page is `streamlit_app.py` in your workspace: edit it and reload.")
name = st.text_input("Your name", "world")
st.write(f"Hello, {name}!")
