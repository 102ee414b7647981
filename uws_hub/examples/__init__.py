"""Programs that the example job types of the shipped ``jupyterhub_config.py`` run."""
