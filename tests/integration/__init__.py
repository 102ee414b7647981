"""End-to-end tests: real hubs, proxies, single-user servers, SLURM, LDAP, browsers."""
