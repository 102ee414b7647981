# Stands in for a missing jupyter-server-proxy: a job type of tests/integration/test_apps.py puts this
# folder first on PYTHONPATH, so its job's server cannot load the extension that would serve its app.
raise ImportError("jupyter-server-proxy is not installed here (tests/without_proxy)")
